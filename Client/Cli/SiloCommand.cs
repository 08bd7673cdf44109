using System.CommandLine;

namespace MoeCluster.Cli;

/// <summary><c>moe silo</c>: runs one silo (the Silo executable) with every argument given; Ctrl+C stops it gracefully.</summary>
public static class SiloCommand
{
    public static Command Create() => SiblingExecutable.Create("silo",
        "Runs one silo of a cluster until Ctrl+C (which hands its experts off to the other silos). " +
        "Every argument goes to it; `./moe silo --help` lists them.\n\n" +
        "Example: ./moe silo --port 11111 --gateway-port 30000 --status-port 8080\n" + ExitCodes.Help,
        "Silo", "MoeCluster.Silo.dll");
}
