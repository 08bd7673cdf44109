using System.CommandLine;

namespace MoeCluster.Cli;

/// <summary><c>moe bench</c>: the benchmark executable (Client/Bench), which the CLI does not carry itself.</summary>
public static class BenchCommand
{
    public static Command Create() => SiblingExecutable.Create("bench",
        "Runs the benchmark (moe-bench): the layer through an in-process silo against the reference layer, " +
        "then checkpoint writes. Every argument goes to it: --quick, --repeats N, --redis host:port.\n\n" +
        "Example: ./moe bench --quick\n" + ExitCodes.Help,
        Path.Combine("Client", "Bench"), "moe-bench.dll");
}
