using System.CommandLine;
using MoeCluster.Bench;

var quick = new Option<bool>("--quick") { Description = "Fewer repeats and a smaller standard batch, for a smoke run in under a minute" };
var repeats = new Option<int>("--repeats") { Description = "Timed repeats per row (after warm-up)", DefaultValueFactory = _ => 7 };
var redis = new Option<string?>("--redis") { Description = "Also time the Redis checkpoint store at host:port" };
var plot = new Option<string>("--plot") { Description = "PNG of the ratios to the reference layer", DefaultValueFactory = _ => Path.Combine("plots", "bench-ratios.png") };
var root = new RootCommand("Times the MoE layer through an in-process cluster against the reference layer in the same run.\n\n" +
    "Example: ./moe bench")
{
    quick, repeats, redis, plot,
};
root.SetAction(async (parse, cancel) =>
{
    var rows = await ClusterBenchmark.RunAsync(parse.GetValue(quick), parse.GetValue(repeats), cancel);
    var ratios = rows.Where(r => r.RatioToReference is not null).Select(r => ($"{r.Config}\n{r.Mode}", r.RatioToReference!.Value)).ToList();
    if (ratios.Count > 0) Console.WriteLine($"plot: {MoeCluster.Bench.Plots.BenchRatioPlot.Write(parse.GetValue(plot)!, ratios)}");
    await CheckpointBenchmark.RunAsync(parse.GetValue(quick), parse.GetValue(redis));
    return 0;
});
return await root.Parse(args).InvokeAsync();
