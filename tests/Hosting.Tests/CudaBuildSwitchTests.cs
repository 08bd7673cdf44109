using System.Diagnostics;
using System.Text.Json;
using Xunit;

namespace MoeCluster.Hosting.Tests;

/// <summary>
/// The CUDA build switch (Directory.Build.targets): <c>-p:MoeCuda=true</c> swaps libtorch-cpu-linux-x64
/// for TorchSharp-cuda-linux in the projects that carry libtorch, and leaves the managed TorchSharp of
/// the libraries alone. TorchSharp-cuda-linux is not served here, so MSBuild only evaluates the
/// projects (no restore) and the test reads their package references.
/// </summary>
public class CudaBuildSwitchTests
{
    private static readonly string Root = FindRoot();

    private static async Task<(string[] References, Dictionary<string, string> Versions)> Evaluate(string project, bool cuda)
    {
        var start = new ProcessStartInfo("dotnet",
            $"msbuild \"{Path.Combine(Root, project)}\" -nologo -getItem:PackageReference -getItem:PackageVersion" + (cuda ? " -p:MoeCuda=true" : ""))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Root,
        };
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await process.WaitForExitAsync(timeout.Token);
        Assert.True(process.ExitCode == 0, $"dotnet msbuild {project}: exit {process.ExitCode}\n{await stdout}\n{await stderr}");
        var items = JsonDocument.Parse(await stdout).RootElement.GetProperty("Items");
        var references = items.GetProperty("PackageReference").EnumerateArray().Select(i => i.GetProperty("Identity").GetString()!).ToArray();
        var versions = items.GetProperty("PackageVersion").EnumerateArray()
            .ToDictionary(i => i.GetProperty("Identity").GetString()!, i => i.GetProperty("Version").GetString()!);
        return (references, versions);
    }

    [Fact]
    public async Task The_switch_gives_the_silo_TorchSharp_cuda_and_without_it_libtorch_cpu()
    {
        var evaluations = await Task.WhenAll(
            Evaluate("Silo/Silo.csproj", cuda: false),
            Evaluate("Silo/Silo.csproj", cuda: true),
            Evaluate("Hosting/Hosting.csproj", cuda: true));
        var (cpu, cpuVersions) = evaluations[0];
        var (gpu, gpuVersions) = evaluations[1];
        var (library, _) = evaluations[2];

        Assert.Contains("libtorch-cpu-linux-x64", cpu);
        Assert.DoesNotContain("TorchSharp-cuda-linux", cpu);
        Assert.Contains("TorchSharp-cuda-linux", gpu);
        Assert.DoesNotContain("libtorch-cpu-linux-x64", gpu);
        // Everything else the silo references is the same in both builds.
        Assert.Equal(cpu.Where(r => r != "libtorch-cpu-linux-x64").Order(), gpu.Where(r => r != "TorchSharp-cuda-linux").Order());
        // TorchSharp-cuda-linux is TorchSharp plus libtorch's CUDA build: its version must be TorchSharp's.
        Assert.Equal(gpuVersions["TorchSharp"], gpuVersions["TorchSharp-cuda-linux"]);
        Assert.Equal(cpuVersions["TorchSharp"], gpuVersions["TorchSharp"]);

        // A library references only the managed TorchSharp, which both builds share.
        Assert.Contains("TorchSharp", library);
        Assert.DoesNotContain("TorchSharp-cuda-linux", library);
        Assert.DoesNotContain("libtorch-cpu-linux-x64", library);
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MoeCluster.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no MoeCluster.sln above {AppContext.BaseDirectory}");
    }
}
