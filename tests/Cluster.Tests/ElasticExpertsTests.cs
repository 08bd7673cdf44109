using MoeCluster.Client;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// Experts added (fresh or split) and removed while a layer trains, against the reference layer
/// making the same change at the same step.
/// </summary>
[Collection(SharedClusterCollection.Name)]
public class ElasticExpertsTests(SharedClusterFixture fixture, ITestOutputHelper output)
{
    private static async Task TrainStepAsync(RemoteMoeLayer layer, ReferenceTrainer reference, Generator generator, long firstBatch)
    {
        for (long batch = firstBatch; batch < firstBatch + 2; batch++)
        {
            using var x = randn(48, reference.Spec.DModel, generator: generator);
            using var dy = randn(48, reference.Spec.DModel, generator: generator).mul_(0.1);
            using var y = reference.ForwardBackward(batch, x, dy, auxGrad: 1.0, out var expectedDx);
            using var forward = await layer.ForwardAsync(x, batchId: batch);
            using var dx = await layer.BackwardAsync(batch, dy);
            TensorCompare.Close(forward.Y, y, 1e-5, $"y of batch {batch}");
            TensorCompare.Close(dx, expectedDx, 1e-5, $"dx of batch {batch}");
            expectedDx.Dispose();
        }
        reference.Step();
        await layer.StepAsync();
    }

    private static bool BitIdentical(Tensor a, Tensor b)
    {
        using var equal = a.eq(b).all();
        return a.shape.SequenceEqual(b.shape) && equal.item<bool>();
    }

    private static void Dispose(Dictionary<string, Tensor> weights)
    {
        foreach (var t in weights.Values) t.Dispose();
    }

    /// <summary>
    /// The split comes first, at version 0, where the cluster and the reference are bit-identical:
    /// a split expert ties its parent exactly until the next step, and which of two tied experts
    /// takes a token at the top-k boundary is decided by the last bit of the logits, which two
    /// runs that differ by rounding (1e-9) need not share. The split of a trained expert is checked
    /// bit for bit below (<see cref="A_split_expert_starts_with_its_parents_weights_optimizer_state_and_gate_column"/>).
    /// </summary>
    [Theory]
    [InlineData(OptimizerKind.AdamW)]
    [InlineData(OptimizerKind.Sgd)]
    public async Task Split_add_and_remove_during_training_keep_parity_with_the_reference(OptimizerKind kind)
    {
        var name = $"elastic-parity-{kind}".ToLowerInvariant();
        var spec = new LayerSpec
        {
            DModel = 12, DFF = 24, NumExperts = 4, TopK = 2, CapacityFactor = 0, Seed = 51, JitterEpsilon = 0.01,
            Optimizer = new OptimizerSpec { Kind = kind, LearningRate = kind == OptimizerKind.Sgd ? 0.05 : 1e-2, Momentum = 0.9, WeightDecay = 0.01, MaxGradNorm = 1.0 },
        };
        var layer = await fixture.Client.CreateLayerAsync(name, spec);
        using var reference = new ReferenceTrainer(name, spec);
        using var generator = new Generator(52);

        var split = await layer.SplitExpertAsync(1);
        reference.AddExperts(1, ExpertInit.Split(1));
        Assert.Equal([4], split.Added);
        await TrainStepAsync(layer, reference, generator, 0);
        await TrainStepAsync(layer, reference, generator, 10);

        var added = await layer.AddExpertsAsync(2);
        reference.AddExperts(2, ExpertInit.Fresh);
        Assert.Equal([5, 6], added.Added);
        Assert.Equal([0, 1, 2, 3, 4, 5, 6], added.ExpertIds);
        Assert.Equal(7, layer.Spec.NumExperts);
        await TrainStepAsync(layer, reference, generator, 20);

        var removed = await layer.RemoveExpertsAsync(0, 5);
        reference.RemoveExperts(0, 5);
        Assert.Equal([1, 2, 3, 4, 6], removed.ExpertIds);
        await TrainStepAsync(layer, reference, generator, 30);
        await TrainStepAsync(layer, reference, generator, 40);

        var after = await layer.GetWeightsAsync();
        Assert.Equal([12, 5], after["gate"].shape);
        Assert.DoesNotContain("experts.0.w1", after.Keys);
        var expected = reference.Weights();
        foreach (var (key, value) in expected) output.WriteLine($"{key}: relative error {TensorCompare.RelativeError(after[key], value):E2}");
        TensorCompare.WeightsClose(after, expected, 1e-5);
        var stats = await layer.GetStatsAsync();
        Assert.Equal(new[] { 1, 2, 3, 4, 6 }, stats.Experts.Select(e => e.Expert.Index).ToArray());
        Dispose(after);
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task A_split_expert_starts_with_its_parents_weights_optimizer_state_and_gate_column()
    {
        var spec = new LayerSpec { DModel = 12, DFF = 24, NumExperts = 4, TopK = 2, Seed = 54, Optimizer = new OptimizerSpec { LearningRate = 1e-2 } };
        var layer = await fixture.Client.CreateLayerAsync("elastic-split", spec);
        using var reference = new ReferenceTrainer("elastic-split", spec);
        using var generator = new Generator(55);
        await TrainStepAsync(layer, reference, generator, 0);
        await TrainStepAsync(layer, reference, generator, 10);

        var split = await layer.SplitExpertAsync(2);
        Assert.Equal([4], split.Added);
        var weights = await layer.GetWeightsAsync();
        foreach (var part in new[] { "w1", "b1", "w2", "b2" })
            Assert.True(BitIdentical(weights[$"experts.4.{part}"], weights[$"experts.2.{part}"]), $"the split expert's {part} must equal its parent's");
        Assert.True(BitIdentical(weights["gate"].select(1, 4), weights["gate"].select(1, 2)), "the split expert's gate column must equal its parent's");
        Dispose(weights);

        // The optimizer state (AdamW's moments and step count after 2 steps) as both experts wrote it at version 2.
        var root = Directory.GetParent(Directory.GetDirectories(fixture.Cluster.Store, "elastic-split", SearchOption.AllDirectories).Single())!.Parent!.FullName;
        var store = new MoeCluster.Hosting.Checkpoints.DirectoryCheckpointStore(root);
        async Task<Grains.Checkpoints.CheckpointRecord> Read(int id)
        {
            var key = Grains.Checkpoints.CheckpointCodec.ExpertKey("elastic-split", id);
            return Grains.Checkpoints.CheckpointCodec.Decode((await store.ReadAsync(key, 2))!, key, 2, Grains.Checkpoints.CheckpointRecord.ExpertKind, "elastic-split", id);
        }
        var parent = await Read(2);
        var child = await Read(4);
        Assert.True(parent.OptimizerState.Length > 1000, "after two AdamW steps the parent has moments to copy");
        Assert.Equal(parent.OptimizerState, child.OptimizerState);
        Assert.Equal(parent.Weights.Select(w => w.Data), child.Weights.Select(w => w.Data));
        var routerKey = Grains.Checkpoints.CheckpointCodec.RouterKey("elastic-split");
        var router = Grains.Checkpoints.CheckpointCodec.Decode((await store.ReadAsync(routerKey, 2))!, routerKey, 2, Grains.Checkpoints.CheckpointRecord.RouterKind, "elastic-split", -1);
        Assert.Equal([0, 1, 2, 3, 4], router.ExpertIds); // version 2 was written again with the new expert
        Assert.Equal(1, router.ExpertChanges);
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task Experts_change_only_at_a_step_boundary_and_bad_changes_are_refused()
    {
        var spec = new LayerSpec { DModel = 8, DFF = 8, NumExperts = 3, TopK = 2, Seed = 53 };
        var layer = await fixture.Client.CreateLayerAsync("elastic-boundary", spec);

        var unknown = await Assert.ThrowsAsync<ArgumentException>(() => layer.SplitExpertAsync(7));
        Assert.Equal("expert 7 cannot be split: layer \"elastic-boundary\" has experts 0..2", unknown.Message);
        var tooFew = await Assert.ThrowsAsync<ArgumentException>(() => layer.RemoveExpertsAsync(0, 1));
        Assert.Contains("k (top-k) is 2; expected 1 ≤ k ≤ E = 1", tooFew.Message);

        using var x = ones(6, 8);
        using var forward = await layer.ForwardAsync(x);
        var midStep = await Assert.ThrowsAsync<InvalidOperationException>(() => layer.AddExpertsAsync(1));
        Assert.Equal("adding 1 expert(s) (fresh) on layer \"elastic-boundary\" happens at a step boundary, but step 1 has begun: " +
            "1 training micro-batch(es) are in flight, and its micro-batches have run; apply step 1 first (or change the experts before its first forward)", midStep.Message);
        using var dx = await layer.BackwardAsync(forward.BatchId, x);
        await Assert.ThrowsAsync<InvalidOperationException>(() => layer.RemoveExpertsAsync(2));
        await layer.StepAsync();
        var removed = await layer.RemoveExpertsAsync(2);
        Assert.Equal([0, 1], removed.ExpertIds);
        var again = await layer.AddExpertsAsync(1);
        Assert.Equal([3], again.Added); // a removed id is never given out again
        Assert.Equal(2, again.ChangeNumber);
        await layer.DeleteAsync();
    }
}
