using MoeCluster.Client;
using MoeCluster.Grains.Compute;
using Spectre.Console;
using static TorchSharp.torch;

namespace MoeCluster.Bench;

/// <summary>
/// The layer timed side by side in one run: (a) the reference layer in this process, (b) the
/// cluster with one in-process silo, (c) the cluster with two silo processes on loopback, each
/// configuration as an inference forward and as forward+backward+step, against libtorch's GEMM
/// rate measured in the same run (at its start, between rows and at its end; the highest is the
/// limit). The setups are timed in turn, repeat by repeat, so that the ratios compare times taken
/// close together on a machine whose load drifts.
/// </summary>
public static class ClusterBenchmark
{
    public const string Forward = "forward";
    public const string Train = "fwd+bwd+step";

    public static async Task<(double GemmGflops, List<BenchRow> Rows, Dictionary<string, double> SiloPeakMiB)> RunAsync(
        IReadOnlyList<BenchConfig> configs, bool quick, int? repeats, int siloThreads, CancellationToken cancellationToken,
        int? baselineExpertWorkers = null, int? microBatches = null)
    {
        var cores = Environment.ProcessorCount;
        using var queue = new ComputeQueue("bench-reference", cores);
        Progress("libtorch's float32 GEMM rate");
        var gemmSize = quick ? 1024 : 2048;
        var gemm = await GemmRate.MeasureGflopsAsync(queue, gemmSize, quick ? 5 : 9);
        // Every layer stays until the end (configs of one spec share theirs), so the slots add up.
        var slots = configs.Select(c => c.Spec).Distinct().Sum(s => s.NumExperts);

        Progress("starting one in-process silo and two silo processes");
        await using var inProcess = await InProcessSilo.StartAsync(slots, cores, cancellationToken);
        await using var processes = await SiloProcesses.StartAsync(2, slots, siloThreads);
        await using var remote = await processes.ConnectAsync();
        // A before/after of the expert workers within one run: a second in-process silo, timed in turn with the others.
        await using var baseline = baselineExpertWorkers is { } workers
            ? await InProcessSilo.StartAsync(slots, cores, cancellationToken, workers, "baseline") : null;

        var rows = new List<BenchRow>();
        var referenceMs = new Dictionary<(int, int, int, int, string), double>();
        // Configs of one layer spec (standard f32 and the 16-token batch) share their layers:
        // creating one writes every expert's version-0 checkpoint, seconds that time nothing.
        var layers = new Dictionary<LayerSpec, List<Setup>>();
        try
        {
            for (int i = 0; i < configs.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var config = repeats is { } r ? configs[i] with { ForwardRepeats = r, TrainRepeats = r } : configs[i];
                using var generator = new Generator(7);
                using var x = randn(config.Tokens, config.Spec.DModel, generator: generator);
                using var dy = randn(config.Tokens, config.Spec.DModel, generator: generator);
                if (!layers.TryGetValue(config.Spec, out var setups))
                {
                    Progress($"{config.Label}: creating the layer in (a), (b) and (c)");
                    layers[config.Spec] = setups = [];
                    // The reference has no wire: a BF16-wire configuration is compared with the F32 one's (a).
                    if (config.Spec.WireDType == TensorDType.F32)
                        setups.Add(new Setup("a", "(a) reference", await ReferenceLayerUnderTest.CreateAsync(config.Spec, queue)));
                    setups.Add(new Setup("b", "(b) 1 in-process silo", await ClusterLayerUnderTest.CreateAsync(inProcess.Client, $"bench-{i}-b", config.Spec)));
                    if (baseline is not null)
                        setups.Add(new Setup("b0", $"(b0) (b) with {baselineExpertWorkers} expert worker(s)", await ClusterLayerUnderTest.CreateAsync(baseline.Client, $"bench-{i}-b0", config.Spec)));
                    var c = await ClusterLayerUnderTest.CreateAsync(remote, $"bench-{i}-c", config.Spec);
                    setups.Add(new Setup("c", "(c) 2 silo processes", c));
                    // A before/after of micro-batches in flight within one run: (b) and (c)'s own layers, sent in N parts.
                    if (microBatches is { } n)
                    {
                        var b = (ClusterLayerUnderTest)setups.First(s => s.Id == "b").Layer;
                        setups.Add(new Setup($"b×{n}", $"(b) {n} micro-batches in flight", b.InFlight(n)));
                        setups.Add(new Setup($"c×{n}", $"(c) {n} micro-batches in flight", c.InFlight(n)));
                    }
                }
                foreach (var mode in new[] { Forward, Train })
                {
                    Progress($"{config.Label}: {mode}, {Repeats(config, mode)} repeats of each setup in turn");
                    var measured = await MeasureInTurn(config, mode, setups, x, dy);
                    // The load of a shared machine drifts: the GEMM rate is sampled between rows
                    // too, and the highest rate seen in the run is the limit the rows are held to.
                    gemm = Math.Max(gemm, await GemmRate.MeasureGflopsAsync(queue, gemmSize, 3));
                    var key = (config.Tokens, config.Spec.DModel, config.Spec.DFF, config.Spec.NumExperts, mode);
                    foreach (var reference in measured.Where(m => m.Setup.Id == "a"))
                        referenceMs[key] = reference.MedianMs;
                    referenceMs.TryGetValue(key, out var floor);
                    foreach (var (setup, ms, routed, faults, jit) in measured)
                    {
                        var flops = mode == Forward ? config.ForwardFlops(routed) : config.TrainFlops(routed);
                        var seconds = ms / 1000;
                        rows.Add(new BenchRow(config.Label, setup.Id, $"{setup.Name} · {mode}", ms, config.Tokens / seconds,
                            setup.Id != "a" && floor > 0 ? ms / floor : null, flops / seconds, faults, jit));
                    }
                }
            }
        }
        finally
        {
            foreach (var s in layers.Values.SelectMany(l => l)) await s.Layer.DisposeAsync();
        }
        Progress("libtorch's float32 GEMM rate again");
        gemm = Math.Max(gemm, await GemmRate.MeasureGflopsAsync(queue, gemmSize, quick ? 5 : 9));
        // Until here GemmShare held the row's FLOP/s; now the share of the highest rate seen.
        for (int j = 0; j < rows.Count; j++) rows[j] = rows[j] with { GemmShare = rows[j].GemmShare / (gemm * 1e9) };
        var siloPeaks = processes.ProcessIds.Select((pid, i) => ($"(c) silo process {i + 1}", PeakMemory.MiB(pid)))
            .ToDictionary(p => p.Item1, p => p.Item2);
        return (gemm, rows, siloPeaks);
    }

    private static readonly System.Diagnostics.Stopwatch Clock = System.Diagnostics.Stopwatch.StartNew();

    /// <summary>A grey line per phase with the seconds since the start, so a slow phase shows.</summary>
    public static void Progress(string phase) => AnsiConsole.MarkupLine($"[grey]{Clock.Elapsed.TotalSeconds,6:F1} s  {Markup.Escape(phase)}…[/]");

    /// <summary>
    /// libtorch threads per silo process: the cores shared between the two, so that experts on
    /// both silos computing at once do not run twice as many threads as there are cores.
    /// </summary>
    public static int SiloProcessThreads(int cores) => Math.Max(1, cores / 2);

    private sealed record Setup(string Id, string Name, ILayerUnderTest Layer);

    /// <summary>
    /// Times the setups in turn (a, b, c, a, b, c, …) rather than one after another, so that a
    /// change in the machine's load while they run falls on all of them alike. Medians per setup.
    /// </summary>
    private static async Task<List<(Setup Setup, double MedianMs, long Routed, long? PageFaults, double JitMs)>> MeasureInTurn(
        BenchConfig config, string mode, List<Setup> setups, Tensor x, Tensor dy)
    {
        Func<Task<long>> Work(Setup s) => mode == Forward ? () => s.Layer.ForwardAsync(x) : () => s.Layer.TrainStepAsync(x, dy);
        var repeats = Repeats(config, mode);
        var warmup = repeats >= 20 ? 10 : repeats <= 3 ? 1 : 2;
        var routed = new long[setups.Count];
        for (int w = 0; w < warmup; w++)
            for (int j = 0; j < setups.Count; j++) routed[j] = await Work(setups[j])();
        var samples = setups.Select(_ => new List<double>()).ToArray();
        var faults = setups.Select(_ => new List<double>()).ToArray();
        var jit = new double[setups.Count];
        for (int r = 0; r < repeats; r++)
            for (int j = 0; j < setups.Count; j++)
            {
                var before = PageFaults.Minor();
                var compiled = SteadyStateJit.CompilationMs();
                var watch = System.Diagnostics.Stopwatch.StartNew();
                routed[j] = await Work(setups[j])();
                samples[j].Add(watch.Elapsed.TotalMilliseconds);
                jit[j] += SteadyStateJit.CompilationMs() - compiled;
                var after = PageFaults.Minor();
                faults[j].Add(before < 0 || after < 0 ? -1 : after - before); // −1: /proc could not be read
            }
        return setups.Select((s, j) => (s, Median(samples[j]), routed[j], faults[j].Any(f => f < 0) ? null : (long?)Median(faults[j]), jit[j])).ToList();
    }

    private static int Repeats(BenchConfig config, string mode) => mode == Forward ? config.ForwardRepeats : config.TrainRepeats;

    private static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }
}
