using MoeCluster.Client;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// Expert dropout through the grains: the experts draw the masks the reference draws for the
/// same (seed, step, batch, expert), and a step redone after the layer went back to its durable
/// version (what the SDK's replay does after a lost silo) draws them again.
/// </summary>
[Collection(SharedClusterCollection.Name)]
public class ExpertDropoutTrainingTests(SharedClusterFixture fixture)
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Training_with_expert_dropout_equals_the_reference_also_after_a_redone_step(bool recompute)
    {
        var spec = new LayerSpec
        {
            DModel = 12, DFF = 24, NumExperts = 4, TopK = 2, CapacityFactor = 1.25, MinCapacity = 1, Seed = 51,
            ExpertDropout = 0.4, RecomputeInBackward = recompute, Optimizer = new OptimizerSpec { LearningRate = 1e-2 },
        };
        var name = $"dropout-{recompute}";
        var layer = await fixture.Client.CreateLayerAsync(name, spec);
        using var reference = new ReferenceTrainer(name, spec);
        using var generator = new Generator(52);
        for (int step = 1; step <= 3; step++)
        {
            var batches = Enumerable.Range(0, 2).Select(i => (Id: 10L * step + i, X: randn(32, spec.DModel, generator: generator), Dy: randn(32, spec.DModel, generator: generator))).ToList();
            foreach (var (id, x, dy) in batches)
            {
                using var y = reference.ForwardBackward(id, x, dy, 1.0, out var expectedDx);
                using var forward = await layer.ForwardAsync(x, batchId: id);
                using var dx = await layer.BackwardAsync(id, dy);
                TensorCompare.Close(forward.Y, y, 1e-5, $"y of batch {id}");
                TensorCompare.Close(dx, expectedDx, 1e-5, $"∂x of batch {id}");
                expectedDx.Dispose();
            }
            if (step == 2)
            {
                // The step's gradients are thrown away as after a lost silo, and its micro-batches run again.
                Assert.Equal(1, await fixture.Client.Orleans.GetGrain<IMoeRouterGrain>(name).Recover());
                foreach (var (id, x, dy) in batches)
                {
                    using var forward = await layer.ForwardAsync(x, batchId: id);
                    using var dx = await layer.BackwardAsync(id, dy);
                }
            }
            reference.Step();
            Assert.Equal(step, await layer.StepAsync());
            foreach (var (_, x, dy) in batches) { x.Dispose(); dy.Dispose(); }
        }
        var weights = await layer.GetWeightsAsync();
        TensorCompare.WeightsClose(weights, reference.Weights(), 1e-5);
        foreach (var w in weights.Values) w.Dispose();
    }
}
