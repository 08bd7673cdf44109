using System.Diagnostics;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// The top of the expert-count range (2 to 1000 and a little beyond): a layer of 1,024 small
/// experts on a 2-silo cluster is created, trains 5 steps and reports its stats. It prints the
/// time to activate all of them (README, Elasticity).
/// It starts a cluster of its own but runs in the shared cluster's collection, so not beside the
/// 304 MiB layer of <see cref="WeightTransferTests"/>: each wants both cores of a CI machine, and
/// together the big layer's creation once took over the client's response timeout.
/// </summary>
[Collection(SharedClusterCollection.Name)]
public class ThousandExpertsTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_layer_of_1024_experts_activates_trains_5_steps_and_reports_stats_on_2_silos()
    {
        await using var cluster = await MoeTestCluster.StartAsync(silos: 2, expertsPerDevice: 512);
        var spec = new LayerSpec
        {
            DModel = 64, DFF = 128, NumExperts = 1024, TopK = 2, CapacityFactor = 0, Seed = 61,
            // Checkpoints at step 5 only: 1,024 records a step would time the store, not the layer.
            CheckpointEvery = 5,
        };
        var watch = Stopwatch.StartNew();
        var layer = await cluster.Client.CreateLayerAsync("experts-1024", spec);
        var activation = watch.Elapsed;

        using var generator = new Generator(62);
        var stepTimes = new List<TimeSpan>();
        for (int step = 1; step <= 5; step++)
        {
            watch.Restart();
            using var x = randn(2048, spec.DModel, generator: generator);
            using var forward = await layer.ForwardAsync(x);
            using var dy = randn(2048, spec.DModel, generator: generator).mul_(0.01);
            using var dx = await layer.BackwardAsync(forward.BatchId, dy);
            Assert.Equal(step, await layer.StepAsync());
            stepTimes.Add(watch.Elapsed);
        }
        Assert.Equal(5, await layer.FlushAsync());

        var stats = await layer.GetStatsAsync();
        Assert.Equal(1024, stats.Experts.Length);
        Assert.Equal(Enumerable.Range(0, 1024), stats.Experts.Select(e => e.Expert.Index));
        Assert.All(stats.Experts, e => Assert.Equal(5, e.Expert.Version));
        Assert.Equal(5 * 2048 * 2, stats.TokensRouted);
        var perSilo = stats.Experts.GroupBy(e => e.Expert.Placement.Silo).Select(g => g.Count()).Order().ToArray();
        Assert.Equal([512, 512], perSilo);
        var used = stats.Experts.Count(e => e.TokensRouted > 0);
        output.WriteLine($"1,024 experts (d 64, d_ff 128, top-2) on 2 silos: activated in {activation.TotalSeconds:F1} s; " +
            $"5 steps of 2,048 tokens: {string.Join(", ", stepTimes.Select(t => $"{t.TotalSeconds:F2} s"))}; " +
            $"{used} experts received tokens, max {stats.Experts.Max(e => e.TokensRouted)} tokens per expert");
        await layer.DeleteAsync();
    }
}
