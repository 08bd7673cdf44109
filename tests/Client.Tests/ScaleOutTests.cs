using TorchSharp;
using Xunit;
using Xunit.Abstractions;

namespace MoeCluster.Client.Tests;

/// <summary>
/// Silo scale-out on real silo processes: a silo that joins a training run receives its share of
/// the experts by live moves the router makes at a step boundary, and the run's weights end bit
/// for bit as in the same run without the new silo.
/// </summary>
public class ScaleOutTests(ITestOutputHelper output)
{
    private const string LayerName = "scale-out";
    private const int JoinAfterStep = 2, Steps = 6;

    [Fact]
    public async Task A_silo_added_mid_run_ends_with_its_share_of_experts_and_the_weights_of_the_run_without_it()
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        // 2 silos of 8 slots hold the 8 experts 4 + 4; a third of 8 slots evens out at 3 + 3 + 2.
        await using var cluster = await ProcessCluster.StartAsync(silos: 2, "--devices cpu --experts-per-device 8 --threads 1");
        await using var client = await cluster.Connect();

        output.WriteLine($"{watch.Elapsed.TotalSeconds:F1} s: 2 silos up");
        var baseline = await client.CreateLayerAsync(LayerName, FailoverTests.Spec);
        await FailoverTests.Train(baseline, 1, Steps);
        var without = await baseline.GetWeightsAsync();
        Assert.Empty((await baseline.GetStatsAsync()).Moves);
        await baseline.DeleteAsync();

        var layer = await client.CreateLayerAsync(LayerName, FailoverTests.Spec);
        await FailoverTests.Train(layer, 1, JoinAfterStep);
        output.WriteLine($"{watch.Elapsed.TotalSeconds:F1} s: baseline run done, 2 steps of the second");
        var joined = await cluster.AddSiloAsync();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while ((await client.GetSlotUsageAsync()).Where(u => u.Capacity > 0).Select(u => u.Silo).Distinct().Count() < 3)
        {
            Assert.True(DateTime.UtcNow < deadline, "the new silo's slots did not become known within 30 s");
            await Task.Delay(100);
        }
        output.WriteLine($"{watch.Elapsed.TotalSeconds:F1} s: the third silo's slots are known");
        await FailoverTests.Train(layer, JoinAfterStep + 1, Steps);
        output.WriteLine($"{watch.Elapsed.TotalSeconds:F1} s: run done");

        var stats = await layer.GetStatsAsync();
        var onNew = stats.Experts.Count(e => e.Expert.Placement.Silo.Contains($":{joined.SiloPort}:"));
        foreach (var m in stats.Moves)
            output.WriteLine($"version {m.AtVersion}: expert {m.Expert} {m.FromSilo} → {m.ToSilo} ({m.Reason}), {m.StateBytes:N0} bytes in {m.Milliseconds:F0} ms");
        output.WriteLine($"experts per silo after the join: {string.Join(", ", stats.Experts.GroupBy(e => e.Expert.Placement.Silo).Select(g => $"{g.Key} {g.Count()}"))}");
        // Even: 3 + 3 + 2 in some order. Usually the new silo gets 2 of a 4 + 4 start; when the
        // deleted baseline's leases were still being released as the layer was placed, the start
        // is uneven (2 + 6 was seen) and the new silo ends with 3.
        Assert.InRange(onNew, 2, 3);
        Assert.All(stats.Experts.GroupBy(e => e.Expert.Placement.Silo), g => Assert.InRange(g.Count(), 2, 3));
        Assert.Equal(onNew, stats.Moves.Count(m => m.ToSilo.Contains($":{joined.SiloPort}:")));
        Assert.All(stats.Moves, m =>
        {
            Assert.Equal(ExpertMove.Spread, m.Reason);
            Assert.InRange(m.AtVersion, JoinAfterStep + 1, Steps - 1); // at a step boundary after the join, before the last step
        });
        Assert.Contains($"joined; {stats.Moves.Length} expert(s) moved at version", string.Concat(cluster.Silos.Select(s => s.Log)));
        FailoverTests.AssertBitIdentical(await layer.GetWeightsAsync(), without);
        // Asked again, nothing moves: the slots are even.
        Assert.Empty(await layer.SpreadExpertsAsync());
    }
}
