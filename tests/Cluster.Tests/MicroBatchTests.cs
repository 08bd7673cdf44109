using MoeCluster.Client;
using MoeCluster.Grains.Numerics;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>A batch sent as micro-batches in flight at once equals its slices run one after another in the reference layer.</summary>
[Collection(SharedClusterCollection.Name)]
public class MicroBatchTests(SharedClusterFixture fixture)
{
    // A capacity factor of 1 so that each slice's own capacity drops assignments: the counts show which capacity applied.
    private static LayerSpec Spec(int seed) => new()
    {
        DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, CapacityFactor = 1.0, MinCapacity = 1, Seed = seed,
        Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.05 },
    };

    [Fact]
    public async Task Three_micro_batches_in_flight_equal_the_reference_on_each_slice()
    {
        const string name = "micro-three";
        var spec = Spec(11);
        var layer = await fixture.Client.CreateLayerAsync(name, spec);
        using var reference = new ReferenceTrainer(name, spec);
        using var generator = new Generator(12);
        using var x = randn(10, 8, generator: generator);
        using var dy = randn(10, 8, generator: generator);

        using var forward = await layer.ForwardMicroBatchesAsync(x, 3);
        Assert.Equal(new long[] { 4, 3, 3 }, forward.Rows);
        Assert.Equal(3, forward.BatchIds.Distinct().Count());
        using var dx = await layer.BackwardMicroBatchesAsync(forward, dy, auxGrad: 3);

        long start = 0;
        var ys = new List<Tensor>();
        var dxs = new List<Tensor>();
        var auxes = new List<double>();
        var capacity = 0;
        var routed = new long[4];
        var dropped = new long[4];
        for (int i = 0; i < 3; i++)
        {
            using var xi = x.narrow(0, start, forward.Rows[i]);
            using var dyi = dy.narrow(0, start, forward.Rows[i]);
            var (aux, stats) = reference.Routing(forward.BatchIds[i], xi);
            auxes.Add(aux);
            capacity += stats.Capacity;
            for (int e = 0; e < 4; e++) { routed[e] += stats.Routed[e]; dropped[e] += stats.Dropped[e]; }
            // ∂L/∂(mean aux) = 3: each slice's aux gets a third of it.
            ys.Add(reference.ForwardBackward(forward.BatchIds[i], xi, dyi, auxGrad: 1.0, out var dxi));
            dxs.Add(dxi);
            start += forward.Rows[i];
        }
        using var expectedY = cat(ys, 0);
        using var expectedDx = cat(dxs, 0);
        foreach (var t in ys.Concat(dxs)) t.Dispose();
        TensorCompare.Close(forward.Y, expectedY, 1e-5, "y");
        TensorCompare.Close(dx, expectedDx, 1e-5, "∂x");
        Assert.Equal(auxes.Average(), forward.AuxLoss, 5);
        Assert.Equal(10, forward.Routing.Tokens);
        Assert.Equal(capacity, forward.Routing.Capacity);
        Assert.Equal(routed, forward.Routing.Routed);
        Assert.Equal(dropped, forward.Routing.Dropped);
        Assert.True(dropped.Sum() > 0, "no assignment was dropped: the test does not show which capacity applied");

        reference.Step();
        await layer.StepAsync();
        TensorCompare.WeightsClose(await layer.GetWeightsAsync(), reference.Weights(), 1e-5);
    }

    [Fact]
    public async Task A_module_with_two_micro_batches_trains_like_the_reference_on_each_half()
    {
        const string name = "micro-module";
        var spec = Spec(13);
        var layer = await fixture.Client.CreateLayerAsync(name, spec);
        using var module = new RemoteMoeModule(layer) { MicroBatches = 2 };
        using var reference = new ReferenceTrainer(name, spec);
        using var generator = new Generator(14);
        using var input = randn(9, 8, generator: generator);
        using var target = randn(9, 8, generator: generator);

        using var h = input.detach().clone().requires_grad_(true);
        using var y = module.forward(h);
        using var loss = y.sub(target).square().sum().add(module.AuxLoss!.mul(2));
        loss.backward();
        using var gotGrad = h.grad!;
        Assert.Equal(9, module.LastRouting!.Tokens);

        Assert.Equal(0, (await layer.GetStatsAsync()).PendingBatches);

        // The same loss in the reference, half by half: ∂L/∂y = 2 (y − target), ∂L/∂(mean aux) = 2,
        // so each half's aux gets 1. The batch ids only seed router jitter, which is off here.
        using var dyAll = y.detach().sub(target).mul(2);
        var expected = new List<Tensor>();
        foreach (var (start, rows) in new[] { (0L, 5L), (5L, 4L) })
        {
            using var xi = input.narrow(0, start, rows);
            using var dyi = dyAll.narrow(0, start, rows);
            using var yi = reference.ForwardBackward(0, xi, dyi, auxGrad: 1.0, out var dxi);
            using var got = y.narrow(0, start, rows);
            TensorCompare.Close(got, yi, 1e-5, $"y of rows {start}..{start + rows}");
            expected.Add(dxi);
        }
        using var expectedGrad = cat(expected, 0);
        foreach (var t in expected) t.Dispose();
        TensorCompare.Close(gotGrad, expectedGrad, 1e-5, "∂input");

        reference.Step();
        await layer.StepAsync();
        TensorCompare.WeightsClose(await layer.GetWeightsAsync(), reference.Weights(), 1e-5);
    }

    [Fact]
    public async Task Bad_input_is_refused_before_any_micro_batch_is_sent_and_nothing_is_lost()
    {
        var layer = await fixture.Client.CreateLayerAsync("micro-refused", Spec(15));
        using var x = ones(6, 8);
        var zero = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => layer.ForwardMicroBatchesAsync(x, 0));
        Assert.StartsWith("micro-batches is 0; expected at least 1", zero.Message);
        var labels = await Assert.ThrowsAsync<ArgumentException>(() => layer.ForwardMicroBatchesAsync(x, 2, labels: new TokenLabels([1, 2, 3], [])));
        Assert.StartsWith("token ids has 3 label(s); expected one per token (6) or none", labels.Message);
        Assert.Equal(0, (await layer.GetStatsAsync()).PendingBatches);

        using var forward = await layer.ForwardMicroBatchesAsync(x, 2);
        Assert.Equal(2, (await layer.GetStatsAsync()).PendingBatches);
        using var shortDy = ones(5, 8);
        var shape = await Assert.ThrowsAsync<ArgumentException>(() => layer.BackwardMicroBatchesAsync(forward, shortDy));
        Assert.StartsWith("dy has shape [5, 8]; expected [6, 8] like the forward's y", shape.Message);
        // A non-finite value in the second half only: refused whole, so the first half's backward never ran.
        using var badDy = ones(6, 8);
        badDy[5, 3] = tensor(float.NaN);
        await Assert.ThrowsAsync<ArgumentException>(() => layer.BackwardMicroBatchesAsync(forward, badDy));
        Assert.Equal(2, (await layer.GetStatsAsync()).PendingBatches);

        using var dy = ones(6, 8);
        using var dx = await layer.BackwardMicroBatchesAsync(forward, dy);
        Assert.Equal(new long[] { 6, 8 }, dx.shape);
        Assert.Equal(0, (await layer.GetStatsAsync()).PendingBatches);
        Assert.Equal(1, await layer.StepAsync());
    }

    [Fact]
    public async Task A_batch_over_the_message_limit_may_be_sent_as_micro_batches_that_fit()
    {
        var layer = await fixture.Client.CreateLayerAsync("micro-limit", new LayerSpec { DModel = 6, DFF = 8, NumExperts = 3, TopK = 1 });
        // 4.4 M tokens × 6 × 4 bytes = 105.6 MB: over the 100 MiB one message may carry, as a whole.
        using var huge = zeros(4_400_000, 6);
        var whole = await Assert.ThrowsAsync<ArgumentException>(() => layer.ForwardMicroBatchesAsync(huge, 1, train: false));
        Assert.StartsWith("x of shape [4400000, 6] needs messages of 105600000 bytes;", whole.Message);
        // In two parts of 52.8 MB each it passes the size check; the value check, next, then finds
        // the NaN in the last row, so nothing is sent either way.
        huge[4_399_999, 2] = tensor(float.NaN);
        var parts = await Assert.ThrowsAsync<ArgumentException>(() => layer.ForwardMicroBatchesAsync(huge, 2, train: false));
        Assert.StartsWith("x holds 1 NaN and 0 infinite value(s), the first in row 4399999;", parts.Message);
        // Parts that do not fit either: the message names them. Never filled: refused by size alone.
        using var larger = empty(9_000_000, 6);
        var tooBig = await Assert.ThrowsAsync<ArgumentException>(() => layer.ForwardMicroBatchesAsync(larger, 2, train: false));
        Assert.StartsWith("x of shape [9000000, 6] in micro-batches of up to 4500000 rows needs messages of 108000000 bytes; " +
            "one call to the cluster carries at most 103809024 (Orleans' MaxMessageBodySize 104857600 less 1 MiB); split it into micro-batches of at most 4325376 tokens", tooBig.Message);
        Assert.Equal(0, (await layer.GetStatsAsync()).PendingBatches);
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task When_one_micro_batch_is_refused_the_others_are_discarded_and_the_refusal_thrown()
    {
        // Room for two pending micro-batches; one is taken, so of the next two one is refused.
        var layer = await fixture.Client.CreateLayerAsync("micro-overloaded", Spec(16) with { MaxPendingBatches = 2 });
        using var x = ones(6, 8);
        using var first = await layer.ForwardAsync(x);
        var error = await Assert.ThrowsAsync<LayerOverloadedException>(() => layer.ForwardMicroBatchesAsync(x, 2));
        Assert.Contains("holds 2 training micro-batches awaiting their backward", error.Message);
        Assert.Equal(1, (await layer.GetStatsAsync()).PendingBatches);

        using var dy = ones(6, 8);
        using var dx = await layer.BackwardAsync(first.BatchId, dy);
        Assert.Equal(1, await layer.StepAsync());
    }

    [Theory]
    [InlineData(10, 3, new long[] { 4, 3, 3 })]
    [InlineData(8, 2, new long[] { 4, 4 })]
    [InlineData(2, 5, new long[] { 1, 1 })]
    [InlineData(7, 1, new long[] { 7 })]
    [InlineData(0, 4, new long[] { 0 })]
    public void Slices_are_consecutive_never_empty_and_differ_by_at_most_one(long rows, int count, long[] sizes)
    {
        var slices = MicroBatchedForward.Slices(rows, count);
        Assert.Equal(sizes, slices.Select(s => s.Rows));
        Assert.Equal(sizes.Select((_, i) => sizes.Take(i).Sum()), slices.Select(s => s.Start));
    }
}
