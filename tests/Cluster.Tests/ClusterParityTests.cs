using MoeCluster.Client;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// Forward, backward and step through the grains of a 2-silo cluster against the reference layer,
/// for the configurations of the numerics parity tests (Float32, 1e-5 relative, norm-wise),
/// with experts kept as graphs or recomputed, jitter and batch-prioritised routing mixed in.
/// </summary>
[Collection(SharedClusterCollection.Name)]
public class ClusterParityTests(SharedClusterFixture fixture, ITestOutputHelper output)
{
    private const double Tolerance = 1e-5;

    public static TheoryData<int, int, double> Grid()
    {
        var data = new TheoryData<int, int, double>();
        foreach (var e in new[] { 1, 2, 8, 64 })
            foreach (var k in new[] { 1, 2, 4 })
                foreach (var cf in new[] { 0, 0.5, 1.25 })
                    if (k <= e) data.Add(e, k, cf);
        return data;
    }

    [Theory]
    [MemberData(nameof(Grid))]
    public async Task Forward_backward_and_step_equal_the_reference(int experts, int k, double cf)
    {
        var seed = experts * 1000 + k * 100 + (int)(cf * 10);
        var random = new Random(seed);
        var spec = new LayerSpec
        {
            DModel = random.Next(4, 25), DFF = random.Next(8, 33), NumExperts = experts, TopK = k,
            CapacityFactor = cf, MinCapacity = random.Next(0, 3), Seed = seed,
            Activation = seed % 2 == 0 ? ExpertActivation.Gelu : ExpertActivation.SwiGlu,
            BatchPrioritized = seed % 3 == 0,
            JitterEpsilon = seed % 5 == 0 ? 0.1 : 0,
            RecomputeInBackward = seed % 4 == 0,
            // SGD keeps the step linear in the gradients, so the step's check is as tight as the
            // gradients'. AdamW's first step is about lr·sign(g), which turns float noise in a
            // near-zero gate gradient into a visible weight difference; TrainingParityTests
            // covers AdamW over 20 steps.
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.1, Momentum = 0.9, WeightDecay = 0.01 },
        };
        var name = $"parity-{experts}-{k}-{cf}";
        var layer = await fixture.Client.CreateLayerAsync(name, spec);
        using var reference = new ReferenceTrainer(name, spec);
        using var generator = new Generator((ulong)seed);
        using var x = randn(random.Next(1, 97), spec.DModel, generator: generator);
        using var dy = randn(x.shape[0], spec.DModel, generator: generator);
        const long batch = 11;

        using var expectedY = reference.ForwardBackward(batch, x, dy, auxGrad: 0.5, out var expectedDx);
        using var _ = expectedDx;
        using var forward = await layer.ForwardAsync(x, train: true, batchId: batch);
        using var dx = await layer.BackwardAsync(batch, dy, auxGrad: 0.5);
        TensorCompare.Close(forward.Y, expectedY, Tolerance, "y");
        TensorCompare.Close(dx, expectedDx, Tolerance, "∂x");

        reference.Step();
        Assert.Equal(1, await layer.StepAsync());
        var weights = await layer.GetWeightsAsync();
        TensorCompare.WeightsClose(weights, reference.Weights(), Tolerance);
        foreach (var w in weights.Values) w.Dispose();
        output.WriteLine($"E={experts} k={k} cf={cf}: {x.shape[0]} tokens, dropped {forward.Routing.TotalDropped}");
    }
}
