using MoeCluster.Grains.Numerics;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// When a step's checkpoints are written, what a repeated call gets, and that experts refuse
/// calls meant for another version of their state.
/// </summary>
[Collection(SharedClusterCollection.Name)]
public class CheckpointCommitTests(SharedClusterFixture fixture)
{
    private static readonly LayerSpec Spec = new() { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, Seed = 5, MinCapacity = 1 };

    private async Task MicroBatch(string layerName, long batchId)
    {
        var layer = await fixture.Client.GetLayerAsync(layerName);
        using var generator = new Generator((ulong)batchId);
        using var x = randn(12, Spec.DModel, generator: generator);
        using var dy = randn(12, Spec.DModel, generator: generator);
        using var forward = await layer.ForwardAsync(x, batchId: batchId);
        using var dx = await layer.BackwardAsync(batchId, dy);
    }

    [Fact]
    public async Task A_step_returns_before_its_checkpoints_are_durable_and_the_next_step_waits_for_them()
    {
        await fixture.Client.CreateLayerAsync("overlapped", Spec);
        var router = fixture.Cluster.Cluster.Client.GetGrain<IMoeRouterGrain>("overlapped");

        await MicroBatch("overlapped", 1);
        Assert.Equal(new StepResult(1, 0), await router.Step(1)); // version 1 is being written
        await MicroBatch("overlapped", 2);
        Assert.Equal(new StepResult(2, 1), await router.Step(2)); // step 2 waited until version 1 was durable
        Assert.Equal(2, await router.Flush());
        Assert.Equal(new StepResult(2, 2), await router.Step(2)); // repeated: already applied, now durable

        var directory = Directory.GetDirectories(fixture.Cluster.Store, "overlapped", SearchOption.AllDirectories).Single();
        var files = Directory.GetFiles(directory, "*.ckpt", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(directory, f)).ToList();
        // The newest two versions of the router and of each of the 4 experts.
        Assert.Equal(10, files.Count);
        Assert.All(files, f => Assert.Matches(@"0*[12]\.ckpt$", f));
    }

    [Fact]
    public async Task With_CheckpointBeforeStepReturns_a_step_returns_durable()
    {
        await fixture.Client.CreateLayerAsync("synchronous", Spec with { CheckpointBeforeStepReturns = true });
        var router = fixture.Cluster.Cluster.Client.GetGrain<IMoeRouterGrain>("synchronous");
        await MicroBatch("synchronous", 1);
        Assert.Equal(new StepResult(1, 1), await router.Step(1));
    }

    [Fact]
    public async Task A_repeated_forward_and_backward_get_the_first_answers_and_count_once()
    {
        // SGD, so that a gradient counted twice would show (AdamW's first step hides a factor of 2).
        var spec = Spec with { Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.1, Momentum = 0 } };
        await fixture.Client.CreateLayerAsync("repeated", spec);
        var router = fixture.Cluster.Cluster.Client.GetGrain<IMoeRouterGrain>("repeated");
        using var reference = new ReferenceTrainer("repeated", spec);
        using var generator = new Generator(9);
        using var x = randn(12, Spec.DModel, generator: generator);
        using var dy = randn(12, Spec.DModel, generator: generator);
        var xp = TensorWire.ToPayload(x);
        var dyp = TensorWire.ToPayload(dy);

        // As the SDK repeats a call whose answer was lost with its gateway: same id, same tensor.
        var first = await router.Forward(7, xp, true);
        var again = await router.Forward(7, xp, true);
        Assert.Equal(first.Y.Data, again.Y.Data);
        var dx1 = await router.Backward(7, dyp, 1.0);
        var dx2 = await router.Backward(7, dyp, 1.0);
        Assert.Equal(dx1.Data, dx2.Data);
        await router.Step(1);

        using (reference.ForwardBackward(7, x, dy, 1.0, out var dx)) dx.Dispose();
        reference.Step();
        var weights = await (await fixture.Client.GetLayerAsync("repeated")).GetWeightsAsync();
        TensorCompare.WeightsClose(weights, reference.Weights(), 1e-5); // the gradients counted once

        // The same id with another tensor is not a repeat: still refused while the batch is in flight.
        await router.Forward(8, xp, true);
        using var other = randn(12, Spec.DModel, generator: generator);
        var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => router.Forward(8, TensorWire.ToPayload(other), true));
        Assert.Equal("batch 8 is already in flight on layer \"repeated\"; run its backward (or discard it) before reusing the id", refused.Message);
        await router.Discard(8);
    }

    [Fact]
    public async Task A_forward_that_reaches_the_router_during_a_recovery_is_refused_and_does_not_block_its_replay()
    {
        await fixture.Client.CreateLayerAsync("late-forward", Spec);
        var router = fixture.Cluster.Cluster.Client.GetGrain<IMoeRouterGrain>("late-forward");
        using var generator = new Generator(10);
        using var x = randn(12, Spec.DModel, generator: generator);
        using var dy = randn(12, Spec.DModel, generator: generator);
        var xp = TensorWire.ToPayload(x);
        var dyp = TensorWire.ToPayload(dy);
        await router.Forward(1, xp, true);
        await router.Backward(1, dyp, 1.0);

        // Step 1's checkpoint is held, so the recovery holds the router's gate waiting for it, and
        // a forward comes in meanwhile: as a call rerouted from a lost silo can come after the
        // client has begun to recover, and then replays the same batch.
        Task<long> recovery;
        Task<LayerForwardResult> late;
        using (CallHold.Hold(nameof(IMoeExpertGrain.FlushCheckpoint), "late-forward"))
        {
            Assert.Equal(new StepResult(1, 0), await router.Step(1));
            var begun = CallHold.Begun(nameof(IMoeRouterGrain.Recover), "late-forward");
            recovery = router.Recover();
            await begun;
            late = router.Forward(2, xp, true);
            await Task.Delay(100); // the forward reaches the router and waits at its gate
            Assert.False(recovery.IsCompleted || late.IsCompleted);
        }
        Assert.Equal(1, await recovery);
        var refused = await Assert.ThrowsAsync<RouterStateLostException>(() => late);
        Assert.Equal("the forward of batch 2 on layer \"late-forward\" was dropped by a recovery of the layer before it ran; the client replays it", refused.Message);

        // The replay of batch 2 finds its id free, and the step it belongs to runs.
        var replayed = await router.Forward(2, xp, true);
        Assert.Equal(new[] { 12L, Spec.DModel }, replayed.Y.Shape);
        await router.Backward(2, dyp, 1.0);
        Assert.Equal(2, (await router.Step(2)).Version);
        Assert.Equal(0, (await router.GetStats()).PendingBatches);
    }

    [Fact]
    public async Task A_training_forward_meant_for_a_router_activation_lost_with_its_silo_is_refused()
    {
        await fixture.Client.CreateLayerAsync("old-epoch", Spec);
        var router = fixture.Cluster.Cluster.Client.GetGrain<IMoeRouterGrain>("old-epoch");
        using var x = ones(5, Spec.DModel);
        var xp = TensorWire.ToPayload(x);
        var epoch = await router.GetEpoch();

        // As a forward sent before the router's silo died, delivered to its successor after the
        // client recovered: the client replays that batch itself.
        var refused = await Assert.ThrowsAsync<RouterStateLostException>(() => router.Forward(3, xp, true, null, "lost-activation"));
        Assert.Equal("the forward of batch 3 on layer \"old-epoch\" was sent to an activation of the router lost with its silo; " +
            "this one came back at version 0, so the layer must recover and replay it", refused.Message);
        Assert.Equal(0, (await router.GetStats()).PendingBatches);

        // Inference keeps nothing, so any activation serves it; the current one trains.
        await router.Forward(3, xp, false, null, "lost-activation");
        Assert.Equal(epoch, (await router.Forward(3, xp, true, null, epoch)).Epoch);
        Assert.Equal(1, (await router.GetStats()).PendingBatches);
        await router.Discard(3);
    }

    [Fact]
    public async Task An_expert_refuses_calls_meant_for_another_version_of_its_state()
    {
        await fixture.Client.CreateLayerAsync("versions", Spec);
        var expert = fixture.Cluster.Cluster.Client.GetGrain<IMoeExpertGrain>(1, "versions");
        using var x = ones(3, Spec.DModel);
        var behind = await Assert.ThrowsAsync<ExpertStateLostException>(() => expert.Forward(1, TensorWire.ToPayload(x), false, 4, null));
        Assert.Equal("expert versions/1 is at version 0, behind its layer at 4 (it came back from an older checkpoint); the layer must recover", behind.Message);
        var skipped = await Assert.ThrowsAsync<ExpertStateLostException>(() => expert.Step(3, 1.0, null));
        Assert.Equal("step 3 cannot be applied to expert versions/1 at version 0 (it came back from an older checkpoint); the layer must recover", skipped.Message);
    }
}
