using System.Diagnostics;
using Xunit;

namespace MoeCluster.Cli.Tests;

/// <summary>The silo's settings from appsettings.json, then MOE_ variables, then the command line.</summary>
public class SiloConfigurationTests
{
    private static async Task<(int ExitCode, string Stdout, string Stderr)> Silo(string arguments, string directory, params (string Name, string Value)[] environment)
    {
        var start = new ProcessStartInfo("dotnet", $"\"{MoeProcess.SiloDll}\" {arguments}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = directory,
        };
        foreach (var (name, value) in environment) start.Environment[name] = value;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout, await stderr);
    }

    [Fact]
    public async Task The_file_sets_defaults_variables_override_it_and_the_help_shows_the_result()
    {
        var directory = Directory.CreateTempSubdirectory("moe-silo-config-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(directory, "appsettings.json"),
                """{ "Silo": { "GatewayPort": 30123, "ExpertsPerDevice": 7, "StatusPort": 8081 } }""");
            var (exit, stdout, stderr) = await Silo("--help", directory, ("MOE_Silo__ExpertsPerDevice", "9"));
            Assert.True(exit == 0, stderr);
            Assert.Matches(@"--gateway-port <gateway-port>\s+Port clients connect to \[default: 30123\]", stdout);
            Assert.Matches(@"--experts-per-device <experts-per-device>\s+Expert slots per device \[default: 9\]", stdout);
            Assert.Matches(@"--status-port <status-port>.*\[default: 8081\]", stdout.Replace("\n", " "));

            // A key that names no option is refused with its name, before anything starts.
            (exit, _, stderr) = await Silo("", directory, ("MOE_Silo__GatewayPrt", "1"));
            Assert.Equal(2, exit);
            Assert.StartsWith("moe silo: the configuration is not valid:", stderr.Trim());
            Assert.Contains("GatewayPrt", stderr);

            // The address other machines reach a silo at must be an IP address.
            (exit, _, stderr) = await Silo("--cluster redis://127.0.0.1:1 --address not-an-ip", directory);
            Assert.Equal(2, exit);
            Assert.Equal("moe silo: --address is 'not-an-ip'; expected the IP address other machines reach this silo at", stderr.Trim());

            // A CUDA device on a machine (or a build) without one: refused before anything starts.
            (exit, _, stderr) = await Silo("--devices cuda:0", directory);
            Assert.Equal(2, exit);
            Assert.StartsWith("moe silo: --devices names cuda:0 but libtorch sees no CUDA device here", stderr.Trim());
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
