using MoeCluster.Client;
using MoeCluster.Grains.Compute;
using Spectre.Console;
using static TorchSharp.torch;

namespace MoeCluster.Bench;

/// <summary>
/// The layer timed side by side in one run: (a) the reference layer in this process, (b) the
/// cluster with one in-process silo, (c) the cluster with two silo processes on loopback, each
/// configuration as an inference forward and as forward+backward+step, against libtorch's GEMM
/// rate measured in the same run. The setups run one after another per configuration, so that
/// the ratios compare times taken close together on a machine whose load drifts.
/// </summary>
public static class ClusterBenchmark
{
    public const string Forward = "forward";
    public const string Train = "fwd+bwd+step";

    public static async Task<(double GemmGflops, List<BenchRow> Rows, Dictionary<string, double> SiloPeakMiB)> RunAsync(
        bool quick, int? repeats, CancellationToken cancellationToken)
    {
        var cores = Environment.ProcessorCount;
        using var queue = new ComputeQueue("bench-reference", cores);
        AnsiConsole.MarkupLine("[grey]measuring libtorch's float32 GEMM rate…[/]");
        var gemm = await GemmRate.MeasureGflopsAsync(queue, quick ? 1024 : 2048, quick ? 5 : 9);
        var configs = BenchConfig.All(quick);
        var slots = configs.Max(c => c.Spec.NumExperts);

        AnsiConsole.MarkupLine("[grey]starting one in-process silo and two silo processes…[/]");
        await using var inProcess = await InProcessSilo.StartAsync(slots, cores, cancellationToken);
        await using var processes = await SiloProcesses.StartAsync(2, slots, SiloProcessThreads(cores));
        await using var remote = await processes.ConnectAsync();

        var rows = new List<BenchRow>();
        var referenceMs = new Dictionary<(int, LayerSpec, string), double>();
        for (int i = 0; i < configs.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var config = configs[i] with { Repeats = repeats ?? configs[i].Repeats };
            using var generator = new Generator(7);
            using var x = randn(config.Tokens, config.Spec.DModel, generator: generator);
            using var dy = randn(config.Tokens, config.Spec.DModel, generator: generator);
            var referenceKey = config.Spec with { WireDType = TensorDType.F32 };

            // The reference has no wire: its rows for a BF16-wire configuration are the F32 ones.
            if (config.Spec.WireDType == TensorDType.F32)
            {
                AnsiConsole.MarkupLine($"[grey]{Markup.Escape(config.Label)}: (a) reference…[/]");
                await using var reference = await ReferenceLayerUnderTest.CreateAsync(config.Spec, queue);
                foreach (var mode in new[] { Forward, Train })
                {
                    var row = await Measure(config, "a", "(a) reference", mode, reference, x, dy, gemm, null);
                    referenceMs[(config.Tokens, referenceKey, mode)] = row.MedianMs;
                    rows.Add(row);
                }
            }
            foreach (var (setup, name, client) in new[] { ("b", "(b) 1 in-process silo", inProcess.Client), ("c", "(c) 2 silo processes", remote) })
            {
                AnsiConsole.MarkupLine($"[grey]{Markup.Escape(config.Label)}: {name}…[/]");
                await using var layer = await ClusterLayerUnderTest.CreateAsync(client, $"bench-{i}-{setup}", config.Spec);
                foreach (var mode in new[] { Forward, Train })
                {
                    referenceMs.TryGetValue((config.Tokens, referenceKey, mode), out var floor);
                    rows.Add(await Measure(config, setup, name, mode, layer, x, dy, gemm, floor > 0 ? floor : null));
                }
            }
        }
        var siloPeaks = processes.ProcessIds.Select((pid, i) => ($"(c) silo process {i + 1}", PeakMemory.MiB(pid)))
            .ToDictionary(p => p.Item1, p => p.Item2);
        return (gemm, rows, siloPeaks);
    }

    /// <summary>
    /// libtorch threads per silo process: the cores shared between the two, so that experts on
    /// both silos computing at once do not run twice as many threads as there are cores.
    /// </summary>
    public static int SiloProcessThreads(int cores) => Math.Max(1, cores / 2);

    private static async Task<BenchRow> Measure(BenchConfig config, string setup, string name, string mode, ILayerUnderTest layer,
        Tensor x, Tensor dy, double gemmGflops, double? referenceMs)
    {
        var warmup = config.Tokens <= 64 ? 10 : 2;
        var (ms, routed) = mode == Forward
            ? await Timing.MedianAsync(warmup, config.Repeats, () => layer.ForwardAsync(x))
            : await Timing.MedianAsync(warmup, config.Repeats, () => layer.TrainStepAsync(x, dy));
        var flops = mode == Forward ? config.ForwardFlops(routed) : config.TrainFlops(routed);
        var seconds = ms / 1000;
        return new BenchRow(config.Label, setup, $"{name}, {mode}", ms, config.Tokens / seconds,
            referenceMs is { } floor ? ms / floor : null, flops / seconds / (gemmGflops * 1e9));
    }
}
