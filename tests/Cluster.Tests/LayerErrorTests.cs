using MoeCluster.Client;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>Bad calls fail with a message that names the problem, and leave the layer as it was.</summary>
[Collection(SharedClusterCollection.Name)]
public class LayerErrorTests(SharedClusterFixture fixture)
{
    private static readonly LayerSpec Spec = new() { DModel = 6, DFF = 8, NumExperts = 3, TopK = 2, Seed = 1 };

    [Fact]
    public async Task A_spec_out_of_range_is_refused_before_anything_is_created()
    {
        var error = await Assert.ThrowsAsync<ArgumentException>(() => fixture.Client.CreateLayerAsync("bad-k", Spec with { TopK = 4 }));
        Assert.Equal("k (top-k) is 4; expected 1 ≤ k ≤ E = 3", error.Message);
        var missing = await Assert.ThrowsAsync<InvalidOperationException>(() => fixture.Client.GetLayerAsync("bad-k"));
        Assert.Equal("layer \"bad-k\" does not exist; create it first", missing.Message);
        var lr = await Assert.ThrowsAsync<ArgumentException>(() => fixture.Client.CreateLayerAsync("bad-lr", Spec with { Optimizer = new OptimizerSpec { LearningRate = -1 } }));
        Assert.Equal("learning rate is -1; expected a finite number > 0", lr.Message);
    }

    [Fact]
    public async Task Creating_again_with_the_same_spec_is_a_no_op_and_with_another_spec_an_error()
    {
        await fixture.Client.CreateLayerAsync("twice", Spec);
        await fixture.Client.CreateLayerAsync("twice", Spec);
        var error = await Assert.ThrowsAsync<ArgumentException>(() => fixture.Client.CreateLayerAsync("twice", Spec with { DFF = 9 }));
        Assert.Equal("layer \"twice\" already exists with a different spec; delete it or choose another name", error.Message);
        Assert.Equal(Spec, (await fixture.Client.GetLayerAsync("twice")).Spec);
    }

    [Fact]
    public async Task Wrong_shapes_and_unknown_batches_are_clear_errors_that_lose_nothing()
    {
        var layer = await fixture.Client.CreateLayerAsync("errors", Spec);
        using var wrong = ones(5, 7);
        var shape = await Assert.ThrowsAsync<ArgumentException>(() => layer.ForwardAsync(wrong));
        Assert.Equal("x has shape [5, 7]; layer \"errors\" expects [tokens, 6] (Parameter 'x')", shape.Message);

        using var x = ones(5, 6);
        using var forward = await layer.ForwardAsync(x, batchId: 42);
        var again = await Assert.ThrowsAsync<InvalidOperationException>(() => layer.ForwardAsync(x, batchId: 42));
        Assert.Equal("batch 42 is already in flight on layer \"errors\"; run its backward (or discard it) before reusing the id", again.Message);

        using var badDy = ones(4, 6);
        var dyError = await Assert.ThrowsAsync<ArgumentException>(() => layer.BackwardAsync(42, badDy));
        Assert.Equal("dy has shape [4, 6]; expected [5, 6] like the forward's output", dyError.Message);
        var early = await Assert.ThrowsAsync<InvalidOperationException>(() => layer.StepAsync(1));
        Assert.Equal("step 1 cannot be applied to layer \"errors\": 1 training micro-batch(es) have not finished their backward (ids 42); run their backward or discard them first", early.Message);

        // The batch survived the bad gradient: the right one still works, once.
        using var dy = ones(5, 6);
        using (await layer.BackwardAsync(42, dy)) { }
        var consumed = await Assert.ThrowsAsync<InvalidOperationException>(() => layer.BackwardAsync(42, dy));
        Assert.Equal("no training forward is pending for batch 42 on layer \"errors\": it never ran with train = true, its backward already ran, or it expired", consumed.Message);

        var ahead = await Assert.ThrowsAsync<InvalidOperationException>(() => layer.StepAsync(3));
        Assert.Equal("step 3 cannot be applied to layer \"errors\" at version 0; steps are applied in order, next is 1", ahead.Message);
        Assert.Equal(1, await layer.StepAsync(1));
        using var before = (await layer.GetWeightsAsync())["gate"];
        Assert.Equal(1, await layer.StepAsync(1)); // repeated: ignored
        using var after = (await layer.GetWeightsAsync())["gate"];
        Assert.True(after.Equals(before));
    }

    [Fact]
    public async Task A_forward_whose_backward_never_comes_is_freed_and_counted()
    {
        var layer = await fixture.Client.CreateLayerAsync("expiring", Spec with { SavedForwardTimeout = TimeSpan.FromMilliseconds(300), MinCapacity = 10 });
        using var x = ones(4, 6);
        using (await layer.ForwardAsync(x, batchId: 7)) { }
        Assert.Equal(1, (await layer.GetStatsAsync()).PendingBatches);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        LayerStats stats;
        do
        {
            await Task.Delay(100);
            stats = await layer.GetStatsAsync();
        } while ((stats.PendingBatches > 0 || stats.Experts.Any(e => e.Expert.PendingForwards > 0)) && DateTime.UtcNow < deadline);
        Assert.Equal(0, stats.PendingBatches);
        Assert.Equal(1, stats.ExpiredBatches);
        Assert.Equal(2, stats.Experts.Sum(e => e.Expert.ExpiredForwards)); // k = 2 experts held it
        using var dy = ones(4, 6);
        await Assert.ThrowsAsync<InvalidOperationException>(() => layer.BackwardAsync(7, dy));
        Assert.Equal(1, await layer.StepAsync()); // nothing pending blocks the step any more
    }

    [Fact]
    public async Task Forwards_beyond_the_pending_limit_are_refused_until_backwards_drain_them()
    {
        var layer = await fixture.Client.CreateLayerAsync("backpressure", Spec with { MaxPendingBatches = 3 });
        using var x = ones(4, 6);
        using var dy = ones(4, 6);
        var forwards = new List<RemoteLayerForward>();
        for (int i = 0; i < 3; i++) forwards.Add(await layer.ForwardAsync(x));
        var refused = await Assert.ThrowsAsync<LayerOverloadedException>(() => layer.ForwardAsync(x));
        Assert.Equal("layer \"backpressure\" holds 3 training micro-batches awaiting their backward, its limit (LayerSpec.MaxPendingBatches = 3); " +
            "run their backward or discard them before more forwards", refused.Message);
        using (var inference = await layer.ForwardAsync(x, train: false)) { } // inference keeps nothing: never refused
        Assert.Equal(3, (await layer.GetStatsAsync()).PendingBatches); // the refusal changed nothing

        using (await layer.BackwardAsync(forwards[0].BatchId, dy)) { }
        forwards.Add(await layer.ForwardAsync(x)); // room again
        foreach (var f in forwards.Skip(1)) using (await layer.BackwardAsync(f.BatchId, dy)) { }
        Assert.Equal(1, await layer.StepAsync());
        foreach (var f in forwards) f.Dispose();
        var bad = await Assert.ThrowsAsync<ArgumentException>(() => fixture.Client.CreateLayerAsync("no-room", Spec with { MaxPendingBatches = 0 }));
        Assert.Equal("pending micro-batch limit is 0; expected ≥ 1", bad.Message);
    }
}
