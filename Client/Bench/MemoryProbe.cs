using System.Diagnostics;
using System.Globalization;
using MoeCluster.Grains.Compute;
using static TorchSharp.torch;

namespace MoeCluster.Bench;

/// <summary>
/// Peak memory of (a) and (b) on the standard configuration, each in a fresh process of its own
/// (this program run with <c>--memory-probe</c>), so that one's high-water mark does not hide the
/// other's: the reference layer's process against the process of one silo and its client.
/// </summary>
public static class MemoryProbe
{
    public const string Reference = "reference";
    public const string Silo = "silo";
    public const string ReferenceLabel = "(a) reference process";
    public const string SiloLabel = "(b) silo process (with its client)";
    private const string ResultPrefix = "peak_rss_mib ";

    /// <summary>Runs the probe in a child process and returns its peak resident set in MiB.</summary>
    public static async Task<double> MeasureAsync(string kind, int tokens, int iterations, CancellationToken cancellationToken)
    {
        var self = Path.Combine(AppContext.BaseDirectory, "moe-bench.dll");
        var start = new ProcessStartInfo("dotnet", $"\"{self}\" --memory-probe {kind} --probe-tokens {tokens} --probe-iterations {iterations}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var child = Process.Start(start)!;
        var stdout = child.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = child.StandardError.ReadToEndAsync(cancellationToken);
        try
        {
            await child.WaitForExitAsync(cancellationToken);
        }
        finally
        {
            if (!child.HasExited) child.Kill(entireProcessTree: true);
        }
        var line = (await stdout).Split('\n').FirstOrDefault(l => l.StartsWith(ResultPrefix, StringComparison.Ordinal));
        if (child.ExitCode != 0 || line is null)
            throw new InvalidOperationException($"the {kind} memory probe exited {child.ExitCode} without a '{ResultPrefix}' line; stderr:\n{await stderr}");
        return double.Parse(line[ResultPrefix.Length..], CultureInfo.InvariantCulture);
    }

    /// <summary>The child's side: trains the standard layer for a few steps, then prints its peak resident set.</summary>
    public static async Task<int> RunAsync(string kind, int tokens, int iterations, CancellationToken cancellationToken)
    {
        var config = BenchConfig.All(quick: false)[0];
        var cores = Environment.ProcessorCount;
        using var generator = new Generator(7);
        using var x = randn(tokens, config.Spec.DModel, generator: generator);
        using var dy = randn(tokens, config.Spec.DModel, generator: generator);
        switch (kind)
        {
            case Reference:
            {
                using var queue = new ComputeQueue("bench-reference", cores);
                await using var layer = await ReferenceLayerUnderTest.CreateAsync(config.Spec, queue);
                for (int i = 0; i < iterations; i++) await layer.TrainStepAsync(x, dy);
                break;
            }
            case Silo:
            {
                await using var silo = await InProcessSilo.StartAsync(config.Spec.NumExperts, cores, cancellationToken);
                await using var layer = await ClusterLayerUnderTest.CreateAsync(silo.Client, "memory-probe", config.Spec);
                for (int i = 0; i < iterations; i++) await layer.TrainStepAsync(x, dy);
                break;
            }
            default:
                Console.Error.WriteLine($"moe-bench: --memory-probe is '{kind}'; expected {Reference} or {Silo}");
                return 2;
        }
        Console.WriteLine(ResultPrefix + PeakMemory.MiB(Environment.ProcessId).ToString("F1", CultureInfo.InvariantCulture));
        return 0;
    }
}
