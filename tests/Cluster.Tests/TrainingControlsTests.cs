using MoeCluster.Client;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>Freezing and learning rates per part of a layer, through the cluster, against the reference trained with the same controls.</summary>
[Collection(SharedClusterCollection.Name)]
public class TrainingControlsTests(SharedClusterFixture fixture, ITestOutputHelper output)
{
    private static async Task TrainStepAsync(RemoteMoeLayer layer, ReferenceTrainer reference, Generator generator, long firstBatch)
    {
        for (long batch = firstBatch; batch < firstBatch + 2; batch++)
        {
            using var x = randn(40, reference.Spec.DModel, generator: generator);
            using var dy = randn(40, reference.Spec.DModel, generator: generator).mul_(0.1);
            using var y = reference.ForwardBackward(batch, x, dy, auxGrad: 1.0, out var expectedDx);
            expectedDx.Dispose();
            using var forward = await layer.ForwardAsync(x, batchId: batch);
            using var dx = await layer.BackwardAsync(batch, dy);
        }
        reference.Step();
        await layer.StepAsync();
    }

    private static bool BitIdentical(Tensor a, Tensor b)
    {
        using var equal = a.eq(b).all();
        return a.shape.SequenceEqual(b.shape) && equal.item<bool>();
    }

    [Fact]
    public async Task Frozen_router_and_experts_stay_bit_identical_and_train_again_when_thawed()
    {
        // AdamW with weight decay: a frozen part that still ran its optimizer would decay.
        var spec = new LayerSpec { DModel = 12, DFF = 24, NumExperts = 4, TopK = 2, CapacityFactor = 0, Seed = 41, Optimizer = new OptimizerSpec { LearningRate = 1e-2 } };
        var layer = await fixture.Client.CreateLayerAsync("controls-frozen", spec);
        using var reference = new ReferenceTrainer("controls-frozen", spec);
        using var generator = new Generator(42);
        var initial = await layer.GetWeightsAsync();

        var controls = new TrainingControls { FreezeRouter = true, FrozenExperts = [1, 3] };
        await layer.SetTrainingControlsAsync(controls);
        reference.Controls = controls;
        for (int step = 0; step < 3; step++) await TrainStepAsync(layer, reference, generator, 10 * step);

        var after = await layer.GetWeightsAsync();
        foreach (var (name, value) in after)
        {
            var frozen = name == "gate" || name.StartsWith("experts.1.") || name.StartsWith("experts.3.");
            Assert.True(frozen == BitIdentical(value, initial[name]), $"{name} must {(frozen ? "stay bit-identical" : "change")} after 3 steps");
        }
        TensorCompare.WeightsClose(after, reference.Weights(), 1e-5);

        await layer.SetTrainingControlsAsync(new TrainingControls());
        reference.Controls = new TrainingControls();
        Assert.Equal(new TrainingControls().FreezeRouter, (await layer.GetTrainingControlsAsync()).FreezeRouter);
        await TrainStepAsync(layer, reference, generator, 100);
        var thawed = await layer.GetWeightsAsync();
        Assert.False(BitIdentical(thawed["gate"], after["gate"]), "the router trains again once thawed");
        Assert.False(BitIdentical(thawed["experts.1.w1"], after["experts.1.w1"]), "expert 1 trains again once thawed");
        TensorCompare.WeightsClose(thawed, reference.Weights(), 1e-5);
        foreach (var t in initial.Values.Concat(after.Values).Concat(thawed.Values)) t.Dispose();
    }

    [Fact]
    public async Task Per_expert_and_router_learning_rates_apply_exactly_with_sgd()
    {
        var spec = new LayerSpec
        {
            DModel = 12, DFF = 24, NumExperts = 4, TopK = 2, CapacityFactor = 0, Seed = 43,
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.05, Momentum = 0.9, WeightDecay = 0.01 },
        };
        var controls = new TrainingControls
        {
            RouterLearningRate = 0.2,
            ExpertLearningRateMultipliers = new Dictionary<int, double> { [0] = 0.25, [2] = 4.0 },
        };
        var layer = await fixture.Client.CreateLayerAsync("controls-rates", spec);
        using var reference = new ReferenceTrainer("controls-rates", spec) { Controls = controls };
        using var uncontrolled = new ReferenceTrainer("controls-rates", spec);
        await layer.SetTrainingControlsAsync(controls);
        var initial = await layer.GetWeightsAsync();
        using (var g = new Generator(44)) for (int step = 0; step < 3; step++) await TrainStepAsync(layer, reference, g, 10 * step);
        using (var g = new Generator(44)) for (int step = 0; step < 3; step++)
            {
                // The same data through a reference without controls: the check below must tell them apart.
                for (long batch = 10 * step; batch < 10 * step + 2; batch++)
                {
                    using var x = randn(40, spec.DModel, generator: g);
                    using var dy = randn(40, spec.DModel, generator: g).mul_(0.1);
                    using var y = uncontrolled.ForwardBackward(batch, x, dy, 1.0, out var dx);
                    dx.Dispose();
                }
                uncontrolled.Step();
            }

        // The update (w − w₀), not the weights, so that a wrong rate cannot hide behind the weights' size.
        var after = await layer.GetWeightsAsync();
        var expected = reference.Weights();
        var wrong = uncontrolled.Weights();
        foreach (var (name, value) in after)
        {
            using var update = value.sub(initial[name]);
            using var expectedUpdate = expected[name].sub(initial[name]);
            using var wrongUpdate = wrong[name].sub(initial[name]);
            var error = TensorCompare.RelativeError(update, expectedUpdate);
            output.WriteLine($"{name}: relative error of the update {error:E2}; without the controls it would be {TensorCompare.RelativeError(wrongUpdate, expectedUpdate):E2}");
            Assert.True(error <= 1e-4, $"{name}: update differs from the reference's by {error:E3}");
            if (name == "gate" || name.StartsWith("experts.0.") || name.StartsWith("experts.2."))
                Assert.True(TensorCompare.RelativeError(wrongUpdate, expectedUpdate) > 0.5, $"{name}: the controls must change its update");
        }
        foreach (var t in initial.Values.Concat(after.Values)) t.Dispose();
    }

    [Fact]
    public async Task Controls_change_only_at_a_step_boundary_and_bad_ones_are_refused()
    {
        var spec = new LayerSpec { DModel = 8, DFF = 8, NumExperts = 4, TopK = 1, Seed = 45 };
        var layer = await fixture.Client.CreateLayerAsync("controls-boundary", spec);

        var missing = await Assert.ThrowsAsync<ArgumentException>(() => layer.SetTrainingControlsAsync(new TrainingControls { FrozenExperts = [4] }));
        Assert.Equal("frozen expert 4 does not exist; layer \"controls-boundary\" has experts 0..3", missing.Message);
        var rate = await Assert.ThrowsAsync<ArgumentException>(() => layer.SetTrainingControlsAsync(
            new TrainingControls { ExpertLearningRateMultipliers = new Dictionary<int, double> { [1] = 0 } }));
        Assert.Equal("learning-rate multiplier of expert 1 is 0; expected a finite number > 0 (freeze the expert to stop it training)", rate.Message);

        using var x = ones(6, 8);
        using var forward = await layer.ForwardAsync(x);
        var midStep = await Assert.ThrowsAsync<InvalidOperationException>(() => layer.SetTrainingControlsAsync(new TrainingControls { FreezeRouter = true }));
        Assert.Equal("training controls of layer \"controls-boundary\" change at a step boundary; 1 training micro-batch(es) are in flight; finish or discard them first", midStep.Message);
        using var dx = await layer.BackwardAsync(forward.BatchId, x);
        await layer.StepAsync();
        await layer.SetTrainingControlsAsync(new TrainingControls { FreezeRouter = true });
        Assert.True((await layer.GetTrainingControlsAsync()).FreezeRouter);
    }
}
