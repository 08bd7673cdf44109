using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>The router's specialization report: its counts are the tokens it routed, by class and token id.</summary>
[Collection(SharedClusterCollection.Name)]
public class SpecializationReportTests(SharedClusterFixture fixture)
{
    [Fact]
    public async Task Counts_sum_to_the_tokens_routed_in_labelled_forwards()
    {
        // Capacity 0.5 drops assignments, so drop shares are not all zero.
        var spec = new LayerSpec { DModel = 8, DFF = 8, NumExperts = 4, TopK = 2, CapacityFactor = 0.5, MinCapacity = 1, Seed = 61 };
        var layer = await fixture.Client.CreateLayerAsync("specialization", spec);
        using var generator = new Generator(62);
        long routed = 0, dropped = 0, tokens = 0;
        var tokenIdTotals = new Dictionary<int, long>();
        for (int batch = 0; batch < 3; batch++)
        {
            const int rows = 50;
            using var x = randn(rows, spec.DModel, generator: generator);
            var ids = Enumerable.Range(0, rows).Select(t => (t * 7 + batch) % 20).ToArray();
            var classes = ids.Select(id => id % 3).ToArray();
            using var forward = await layer.ForwardAsync(x, train: batch != 1, labels: new TokenLabels(ids, classes));
            if (batch != 1) using (var dx = await layer.BackwardAsync(forward.BatchId, x)) { }
            routed += forward.Routing.Routed.Sum();
            dropped += forward.Routing.TotalDropped;
            tokens += rows;
        }
        using (var x = randn(30, spec.DModel, generator: generator))
        using (var unlabelled = await layer.ForwardAsync(x, train: false)) { } // not in the report

        var report = await layer.GetSpecializationAsync();
        Assert.Equal(3, report.Batches);
        Assert.Equal(tokens, report.Tokens);
        Assert.Equal(3, report.Classes);
        Assert.Equal(routed, report.Routed);
        Assert.Equal(dropped, report.Dropped);
        Assert.True(dropped > 0, "capacity 0.5 must drop some assignments");
        Assert.Equal(tokens * spec.TopK, report.Routed + report.Dropped);
        foreach (var e in report.Experts)
        {
            Assert.Equal(e.Routed, e.ClassCounts.Sum());
            Assert.InRange(e.ClassEntropyBits, 0, Math.Log2(3) + 1e-12);
            Assert.InRange(e.DropShare, 0, 1);
            Assert.True(e.TopTokens.Length <= 5);
            Assert.True(e.TopTokens.Zip(e.TopTokens.Skip(1)).All(p => p.First.Count >= p.Second.Count), "top tokens come most first");
        }

        var error = await Assert.ThrowsAsync<ArgumentException>(async () =>
        {
            using var x = randn(4, spec.DModel, generator: generator);
            using var f = await layer.ForwardAsync(x, train: false, labels: new TokenLabels([], [0, 1, 2]));
        });
        Assert.Equal("classes has 3 label(s); expected one per token (4) or none", error.Message);

        await layer.ResetSpecializationAsync();
        var reset = await layer.GetSpecializationAsync();
        Assert.Equal(0, reset.Tokens);
        Assert.All(reset.Experts, e => Assert.Equal(0, e.Routed));
    }
}
