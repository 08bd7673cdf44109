using System.Diagnostics;
using MoeCluster.Grains.Compute;
using static TorchSharp.torch;

namespace MoeCluster.Bench;

/// <summary>
/// <c>--profile-small-batch</c>: where a 16-token forward of the standard layer spends its time in
/// (b), piece by piece — empty grain calls, a hop onto a compute queue, one expert's forward called
/// directly, the router's forward, the gateway's, the SDK's — beside the reference layer's, p50 of
/// <c>repeats</c> each after a warm-up; then the experts' product layouts (<see cref="ExpertProductLayouts"/>).
/// </summary>
public static class SmallBatchProfile
{
    public static async Task RunAsync(int repeats, CancellationToken cancellationToken)
    {
        var config = BenchConfig.All(quick: false).First(c => c.Key == "small-batch");
        var spec = config.Spec;
        var cores = Environment.ProcessorCount;
        using var queue = new ComputeQueue("bench-reference", cores);
        using var generator = new Generator(7);
        using var x = randn(config.Tokens, spec.DModel, generator: generator);
        var rows = (int)Math.Max(1, x.shape[0] * spec.TopK / spec.NumExperts);
        using var xe = x.narrow(0, 0, rows).contiguous();
        var payload = new TensorPayload(x.shape, TensorDType.F32, x.bytes.ToArray());
        var expertPayload = new TensorPayload(xe.shape, TensorDType.F32, xe.bytes.ToArray());

        await using var reference = await ReferenceLayerUnderTest.CreateAsync(spec, queue);
        await using var silo = await InProcessSilo.StartAsync(spec.NumExperts, cores, cancellationToken);
        var layer = new ClusterLayerUnderTest(await silo.Client.CreateLayerAsync("profile", spec));
        var orleans = silo.Client.Orleans;
        var gateway = orleans.GetGrain<IMoeLayerGateway>("profile");
        var router = orleans.GetGrain<IMoeRouterGrain>("profile");
        var expert = orleans.GetGrain<IMoeExpertGrain>(0, "profile");
        try
        {
            async Task Time(string what, Func<Task> call)
            {
                for (int i = 0; i < Math.Min(10, repeats); i++) await call();
                var ms = new List<double>();
                for (int i = 0; i < repeats; i++)
                {
                    var watch = Stopwatch.StartNew();
                    await call();
                    ms.Add(watch.Elapsed.TotalMilliseconds);
                }
                ms.Sort();
                Console.WriteLine($"{what,-58} p50 {ms[ms.Count / 2],9:F3} ms   min {ms[0],9:F3} ms");
            }
            await Time("an empty call through the gateway grain (GetVersion)", () => gateway.GetVersion());
            await Time("an empty call to the router grain (GetVersion)", () => router.GetVersion());
            await Time("a hop onto a compute queue and back", () => queue.RunAsync(() => { }));
            await Time($"one expert's forward of {rows} rows, called directly", () => expert.Forward(1, expertPayload, false, 0, null));
            await Time($"the router's forward of {config.Tokens} tokens, called directly", () => router.Forward(1, payload, false));
            await Time("the same through the gateway grain", () => gateway.Forward(1, payload, false, null));
            await Time("the same through the SDK (as (b) is timed)", () => layer.ForwardAsync(x));
            await Time("(a) the reference layer's forward", () => reference.ForwardAsync(x));
            var floor = await WeightReadFloor.MeasureMsAsync(WeightReadFloor.ExpertWeightBytes(spec), 15);
            Console.WriteLine($"{"reading the experts' weights once (the memory floor)",-58} p50 {floor,9:F3} ms");
            await ExpertProductLayouts.RunAsync(queue, spec, repeats);
        }
        finally
        {
            await layer.DisposeAsync();
        }
    }
}
