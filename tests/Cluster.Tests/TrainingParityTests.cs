using MoeCluster.Client;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>Whole training runs through the cluster against the reference layer trained the same way.</summary>
[Collection(SharedClusterCollection.Name)]
public class TrainingParityTests(SharedClusterFixture fixture, ITestOutputHelper output)
{
    [Theory]
    [InlineData(ExpertActivation.Gelu, 0.0)]
    [InlineData(ExpertActivation.SwiGlu, 0.5)]
    public async Task Twenty_AdamW_steps_end_with_the_reference_weights(ExpertActivation activation, double maxGradNorm)
    {
        var spec = new LayerSpec
        {
            DModel = 16, DFF = 32, NumExperts = 8, TopK = 2, CapacityFactor = 1.25, MinCapacity = 1,
            Activation = activation, JitterEpsilon = 0.01, Seed = 20,
            Optimizer = new OptimizerSpec { MaxGradNorm = maxGradNorm },
        };
        var name = $"adamw-{activation}-{maxGradNorm}";
        var layer = await fixture.Client.CreateLayerAsync(name, spec);
        using var reference = new ReferenceTrainer(name, spec);
        using var generator = new Generator(21);
        long batch = 0;
        for (int step = 1; step <= 20; step++)
        {
            // Two micro-batches per step: gradients accumulate before the optimizer runs.
            for (int micro = 0; micro < 2; micro++, batch++)
            {
                using var x = randn(48, spec.DModel, generator: generator);
                using var dy = randn(48, spec.DModel, generator: generator).mul_(0.1);
                using var y = reference.ForwardBackward(batch, x, dy, auxGrad: 1.0, out var expectedDx);
                expectedDx.Dispose();
                using var forward = await layer.ForwardAsync(x, batchId: batch);
                using var dx = await layer.BackwardAsync(batch, dy);
            }
            reference.Step();
            Assert.Equal(step, await layer.StepAsync());
        }
        var weights = await layer.GetWeightsAsync();
        var worst = weights.Max(w => TensorCompare.RelativeError(w.Value, reference.Weights()[w.Key]));
        output.WriteLine($"{activation}, clip {maxGradNorm}: largest relative weight error after 20 steps {worst:E2}");
        TensorCompare.WeightsClose(weights, reference.Weights(), 1e-5);
        foreach (var w in weights.Values) w.Dispose();
    }

    [Fact]
    public async Task BFloat16_experts_and_wire_stay_within_bfloat16_tolerance_of_the_reference()
    {
        var spec = new LayerSpec
        {
            DModel = 16, DFF = 32, NumExperts = 4, TopK = 2, CapacityFactor = 0, Seed = 30,
            ComputeDType = TensorDType.BF16, WireDType = TensorDType.BF16,
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.05 },
        };
        var layer = await fixture.Client.CreateLayerAsync("bf16", spec);
        using var reference = new ReferenceTrainer("bf16", spec);
        using var generator = new Generator(31);
        using var x = randn(40, spec.DModel, generator: generator);
        using var dy = randn(40, spec.DModel, generator: generator);
        using var expectedY = reference.ForwardBackward(0, x, dy, 1.0, out var expectedDx);
        using var _ = expectedDx;
        using var forward = await layer.ForwardAsync(x, batchId: 0);
        using var dx = await layer.BackwardAsync(0, dy);
        // Activations cross the wire in BFloat16 both ways, so the tolerance is BFloat16's.
        TensorCompare.Close(forward.Y, expectedY, 2e-2, "y");
        TensorCompare.Close(dx, expectedDx, 2e-2, "∂x");
        reference.Step();
        await layer.StepAsync();
        TensorCompare.WeightsClose(await layer.GetWeightsAsync(), reference.Weights(), 2e-2);
    }
}
