using System.Diagnostics;
using System.Text;

namespace MoeCluster.Cli.Tests;

/// <summary>Runs the built <c>moe</c> CLI or silo as a child process, as <c>./moe</c> would.</summary>
public static class MoeProcess
{
    public static string RepositoryRoot { get; } = FindRoot();

    /// <summary>Release or Debug: whichever configuration this test assembly was built in.</summary>
    public static string Configuration { get; } =
        AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}") ? "Release" : "Debug";

    public static string CliDll => Path.Combine(RepositoryRoot, "Client", "Cli", "bin", Configuration, "net10.0", "moe.dll");
    public static string BenchDll => Path.Combine(RepositoryRoot, "Client", "Bench", "bin", Configuration, "net10.0", "moe-bench.dll");
    public static string SiloDll => Path.Combine(RepositoryRoot, "Silo", "bin", Configuration, "net10.0", "MoeCluster.Silo.dll");

    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string dll, string arguments, TimeSpan timeout)
    {
        var start = new ProcessStartInfo("dotnet", $"\"{dll}\" {arguments}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = RepositoryRoot,
        };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cancel.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"dotnet {Path.GetFileName(dll)} {arguments} did not finish within {timeout}; stderr: {await stderr}");
        }
        return (process.ExitCode, await stdout, await stderr);
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MoeCluster.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no MoeCluster.sln above {AppContext.BaseDirectory}");
    }
}
