using System.CommandLine;
using MoeCluster.Bench;

var quick = new Option<bool>("--quick") { Description = "Smaller batches and fewer repeats: every row, in under a minute" };
var repeats = new Option<int?>("--repeats") { Description = "Timed repeats per row after warm-up (default 7; 200 for the 16-token forward; --quick 2 and 20)" };
var json = new Option<string?>("--json") { Description = "Also write the rows, the GEMM rate and the peak memory to this JSON file" };
var redis = new Option<string?>("--redis") { Description = "Also time the Redis checkpoint store at host:port" };
var only = new Option<string[]>("--config") { Description = "Only these configs (repeatable): standard-f32, standard-bf16-wire, small-batch, many-experts", AllowMultipleArgumentsPerToken = true };
var siloThreads = new Option<int>("--silo-threads") { Description = "libtorch threads of each of the two silo processes (default: the cores shared between them)", DefaultValueFactory = _ => ClusterBenchmark.SiloProcessThreads(Environment.ProcessorCount) };
var baselineWorkers = new Option<int?>("--baseline-expert-workers") { Description = "Also time (b0): (b) with this many CPU expert workers, in turn with the others (a before/after in one run)" };
var profile = new Option<bool>("--profile-small-batch") { Description = "Only profile the 16-token forward in (b): the time of each piece, beside the reference's" };
var probe = new Option<string?>("--memory-probe") { Hidden = true, Description = "Internal: run one memory probe (reference or silo) and print its peak RSS" };
var probeTokens = new Option<int>("--probe-tokens") { Hidden = true, DefaultValueFactory = _ => 4096 };
var probeIterations = new Option<int>("--probe-iterations") { Hidden = true, DefaultValueFactory = _ => 3 };
var microBatches = new Option<int?>("--micro-batches") { Description = "Also time (b) and (c) with each batch sent as N micro-batches in flight at once, in turn with the others (a before/after in one run)" };
var plot = new Option<string>("--plot") { Description = "PNG of the ratios to the reference layer", DefaultValueFactory = _ => Path.Combine("plots", "bench-ratios.png") };
var root = new RootCommand("Times the MoE layer in one run: (a) the reference layer in this process, (b) the cluster with one " +
    "in-process silo, (c) the cluster with two silo processes on loopback, against libtorch's float32 GEMM rate; then the checkpoint stores.\n\n" +
    "Example: ./moe bench --json bench.json")
{
    quick, repeats, json, redis, only, siloThreads, baselineWorkers, profile, probe, probeTokens, probeIterations, plot, microBatches,
};
root.SetAction(async (parse, cancel) =>
{
    // Redirected output has no terminal width; 80 columns would wrap every row of the table.
    if (Console.IsOutputRedirected) Spectre.Console.AnsiConsole.Profile.Width = 150;
    if (parse.GetValue(probe) is { } kind)
        return await MemoryProbe.RunAsync(kind, parse.GetValue(probeTokens), parse.GetValue(probeIterations), cancel);
    var isQuick = parse.GetValue(quick);
    if (parse.GetValue(repeats) is { } r && r < 1)
    {
        Console.Error.WriteLine($"moe-bench: --repeats is {r}; expected ≥ 1");
        return 2;
    }
    if (parse.GetValue(profile))
    {
        await SmallBatchProfile.RunAsync(parse.GetValue(repeats) ?? 100, cancel);
        return 0;
    }
    var configs = BenchConfig.All(isQuick);
    if (parse.GetValue(only) is { Length: > 0 } names)
    {
        var unknown = names.Where(n => configs.All(c => c.Key != n)).ToList();
        if (unknown.Count > 0)
        {
            Console.Error.WriteLine($"moe-bench: --config {string.Join(", ", unknown)} is unknown; expected {string.Join(", ", configs.Select(c => c.Key))}");
            return 2;
        }
        configs = configs.Where(c => names.Contains(c.Key)).ToList();
    }
    if (parse.GetValue(siloThreads) < 1)
    {
        Console.Error.WriteLine($"moe-bench: --silo-threads is {parse.GetValue(siloThreads)}; expected ≥ 1");
        return 2;
    }
    if (parse.GetValue(baselineWorkers) is < 1 and var w)
    {
        Console.Error.WriteLine($"moe-bench: --baseline-expert-workers is {w}; expected ≥ 1");
        return 2;
    }
    if (parse.GetValue(microBatches) is < 2 and var m)
    {
        Console.Error.WriteLine($"moe-bench: --micro-batches is {m}; expected ≥ 2 (one micro-batch is what (b) and (c) time already)");
        return 2;
    }
    var (gemm, rows, siloPeaks) = await ClusterBenchmark.RunAsync(configs, isQuick, parse.GetValue(repeats), parse.GetValue(siloThreads), cancel,
        parse.GetValue(baselineWorkers), parse.GetValue(microBatches));
    var memory = new Dictionary<string, double>();
    // Two more processes, each loading libtorch and training a few steps: left out of the quick run.
    if (!isQuick && configs.Any(c => c.Key == "standard-f32"))
    {
        ClusterBenchmark.Progress("peak memory of (a) and (b), each in a process of its own");
        memory[MemoryProbe.ReferenceLabel] = await MemoryProbe.MeasureAsync(MemoryProbe.Reference, configs.First(c => c.Key == "standard-f32").Tokens, 3, cancel);
        memory[MemoryProbe.SiloLabel] = await MemoryProbe.MeasureAsync(MemoryProbe.Silo, configs.First(c => c.Key == "standard-f32").Tokens, 3, cancel);
    }
    foreach (var (name, mib) in siloPeaks) memory[name] = mib;
    double? weightsRead = null;
    if (configs.FirstOrDefault(c => c.Key == "small-batch") is { } small)
    {
        ClusterBenchmark.Progress("the memory floor of the 16-token forward: reading the experts' weights once");
        weightsRead = await WeightReadFloor.MeasureMsAsync(WeightReadFloor.ExpertWeightBytes(small.Spec), isQuick ? 5 : 15);
    }
    var report = new BenchReport(gemm, rows, memory,
        $"{Environment.ProcessorCount} cores, {Environment.OSVersion}, .NET {Environment.Version}, libtorch threads {TorchSharp.torch.get_num_threads()}, {SteadyStateJit.Describe()}",
        weightsRead);
    BenchOutput.WriteTable(report, configs);
    BenchTargets.Write(report);
    if (parse.GetValue(json) is { } path) await BenchOutput.WriteJsonAsync(path, report);
    var ratios = rows.Where(r => r.RatioToReference is not null).Select(r => ($"{r.Config}\n{r.Mode}", r.RatioToReference!.Value)).ToList();
    if (ratios.Count > 0) Console.WriteLine($"plot: {MoeCluster.Bench.Plots.BenchRatioPlot.Write(parse.GetValue(plot)!, ratios)}");
    await CheckpointBenchmark.RunAsync(isQuick, parse.GetValue(redis));
    return 0;
});
return await root.Parse(args).InvokeAsync();
