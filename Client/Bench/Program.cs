using System.CommandLine;
using MoeCluster.Bench;

var quick = new Option<bool>("--quick") { Description = "Fewer repeats and a smaller standard batch, for a smoke run in under a minute" };
var repeats = new Option<int>("--repeats") { Description = "Timed repeats per row (after warm-up)", DefaultValueFactory = _ => 7 };
var redis = new Option<string?>("--redis") { Description = "Also time the Redis checkpoint store at host:port" };
var root = new RootCommand("Times the MoE layer through an in-process cluster against the reference layer in the same run.\n\n" +
    "Example: ./moe bench")
{
    quick, repeats, redis,
};
root.SetAction(async (parse, cancel) =>
{
    await ClusterBenchmark.RunAsync(parse.GetValue(quick), parse.GetValue(repeats), cancel);
    await CheckpointBenchmark.RunAsync(parse.GetValue(quick), parse.GetValue(redis));
    return 0;
});
return await root.Parse(args).InvokeAsync();
