using MoeCluster.Grains.Numerics;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Tests.Numerics;

/// <summary>
/// The decomposed layer (router, experts and dispatch as separate functions) against the
/// reference layer (one autograd graph): y, aux, stats, ∂x, ∂W_g and every expert parameter's
/// gradient. Tolerances are norm-wise relative errors: Float32 1e-5, BFloat16 2e-2.
/// </summary>
public class LayerParityTests(ITestOutputHelper output)
{
    public const double Float32Tolerance = 1e-5;
    public const double BFloat16Tolerance = 2e-2;

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
    public void Float32_decomposed_equals_reference(int experts, int k, double cf)
    {
        // Sizes, seed and options vary with the case but are fixed per case, so a failure repeats.
        var seed = experts * 1000 + k * 100 + (int)(cf * 10);
        var random = new Random(seed);
        var config = new MoeLayerConfig
        {
            DModel = random.Next(4, 25),
            DFF = random.Next(8, 33),
            NumExperts = experts,
            TopK = k,
            CapacityFactor = cf,
            MinCapacity = random.Next(0, 3),
            Activation = seed % 2 == 0 ? ExpertActivation.Gelu : ExpertActivation.SwiGlu,
            BatchPrioritized = seed % 3 == 0,
            JitterEpsilon = seed % 5 == 0 ? 0.1 : 0,
            Normalize = seed % 7 == 0 ? false : null,
        };
        var error = CompareOnce(config, seed, tokens: random.Next(1, 97), ExpertBackwardMode.KeepGraph, ScalarType.Float32, Float32Tolerance);
        output.WriteLine($"E={experts} k={k} cf={cf} {config.Activation} d={config.DModel}: largest relative error {error:E2}");
    }

    [Theory]
    [InlineData(8, 2, 1.25, ExpertActivation.Gelu)]
    [InlineData(8, 2, 0.5, ExpertActivation.SwiGlu)]
    [InlineData(64, 4, 0, ExpertActivation.Gelu)]
    [InlineData(2, 1, 1.25, ExpertActivation.SwiGlu)]
    public void BFloat16_decomposed_equals_reference(int experts, int k, double cf, ExpertActivation activation)
    {
        var config = new MoeLayerConfig
        {
            DModel = 16, DFF = 32, NumExperts = experts, TopK = k, CapacityFactor = cf, MinCapacity = 1,
            Activation = activation, ComputeDType = ScalarType.BFloat16,
        };
        var error = CompareOnce(config, seed: experts + k, tokens: 64, ExpertBackwardMode.KeepGraph, ScalarType.Float32, BFloat16Tolerance);
        output.WriteLine($"bf16 E={experts} k={k} cf={cf} {activation}: largest relative error {error:E2}");
    }

    [Theory]
    [InlineData(ExpertActivation.Gelu)]
    [InlineData(ExpertActivation.SwiGlu)]
    public void Recomputing_the_forward_in_backward_equals_reference(ExpertActivation activation)
    {
        var config = new MoeLayerConfig { DModel = 12, DFF = 20, NumExperts = 8, TopK = 2, CapacityFactor = 1.25, MinCapacity = 1, Activation = activation };
        CompareOnce(config, seed: 77, tokens: 50, ExpertBackwardMode.Recompute, ScalarType.Float32, Float32Tolerance);
    }

    [Fact]
    public void BFloat16_input_gives_bfloat16_output_and_gradient()
    {
        var config = new MoeLayerConfig { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, CapacityFactor = 0 };
        CompareOnce(config, seed: 5, tokens: 20, ExpertBackwardMode.KeepGraph, ScalarType.BFloat16, BFloat16Tolerance);
    }

    [Fact]
    public void Gradients_accumulate_over_micro_batches_like_the_reference()
    {
        var config = new MoeLayerConfig { DModel = 10, DFF = 12, NumExperts = 4, TopK = 2, CapacityFactor = 1.0, MinCapacity = 1 };
        using var reference = new ReferenceMoeLayer(config, seed: 3);
        using var decomposed = new DecomposedMoeLayer(config, seed: 3);
        using var generator = new Generator(4);
        for (int batch = 0; batch < 3; batch++)
        {
            using var x = randn(30, 10, generator: generator);
            using var dy = randn(30, 10, generator: generator);
            using (var r = reference.Forward(x, train: true))
            using (var loss = r.Y.mul(dy).sum().add(r.Aux.mul(0.5)))
                loss.backward();
            using var d = decomposed.Forward(batch, x, train: true);
            using var dx = decomposed.Backward(batch, dy, auxGrad: 0.5);
        }
        CompareParameterGrads(reference, decomposed, Float32Tolerance);
        Assert.Equal(0, decomposed.PendingCount);
    }

    [Fact]
    public void Inference_saves_nothing_and_matches_training_routing_without_jitter()
    {
        var config = new MoeLayerConfig { DModel = 8, DFF = 8, NumExperts = 4, TopK = 2, CapacityFactor = 1.0, EvalCapacityFactor = 1.0, MinCapacity = 1 };
        using var reference = new ReferenceMoeLayer(config, seed: 8);
        using var decomposed = new DecomposedMoeLayer(config, seed: 8);
        using var generator = new Generator(1);
        using var x = randn(24, 8, generator: generator);
        using var r = reference.Forward(x, train: false);
        using var d = decomposed.Forward(0, x, train: false);
        TensorAssert.Close(d.Y, r.Y, Float32Tolerance, "y");
        Assert.Equal(0, decomposed.PendingCount);
        Assert.All(decomposed.Experts, e => Assert.Equal(0, e.PendingCount));
        using var dy = ones(24, 8);
        var error = Assert.Throws<InvalidOperationException>(() => decomposed.Backward(0, dy));
        Assert.Equal("no training forward is pending for batch 0: it never ran with train = true, or its backward already ran", error.Message);
    }

    /// <summary>Runs one forward and backward through both layers; returns the largest relative error seen.</summary>
    private static double CompareOnce(MoeLayerConfig config, int seed, int tokens, ExpertBackwardMode mode, ScalarType inputType, double tolerance)
    {
        using var reference = new ReferenceMoeLayer(config, seed);
        using var decomposed = new DecomposedMoeLayer(config, seed, mode: mode);
        using var generator = new Generator((ulong)seed + 1);
        using var x = randn(tokens, config.DModel, generator: generator).to(inputType).requires_grad_(true);
        using var dy = randn(tokens, config.DModel, generator: generator).to(inputType);
        const double auxGrad = 0.75;

        using var r = reference.Forward(x, train: true, noiseSeed: 42);
        using (var loss = r.Y.to(ScalarType.Float32).mul(dy.to(ScalarType.Float32)).sum().add(r.Aux.mul(auxGrad)))
            loss.backward();
        using var d = decomposed.Forward(7, x.detach(), train: true, noiseSeed: 42);
        using var dx = decomposed.Backward(7, dy, auxGrad);

        Assert.Equal(r.Stats.Routed, d.Stats.Routed);
        Assert.Equal(r.Stats.Dropped, d.Stats.Dropped);
        Assert.Equal(r.Stats.Rank0, d.Stats.Rank0);
        Assert.Equal(inputType, d.Y.dtype);
        Assert.Equal(inputType, dx.dtype);
        var worst = 0.0;
        worst = Math.Max(worst, TensorAssert.Close(d.Y, r.Y, tolerance, "y"));
        Assert.True(Math.Abs(d.AuxLoss - r.Aux.item<float>()) <= 1e-6 * Math.Max(1, Math.Abs(d.AuxLoss)), $"aux {d.AuxLoss} vs {r.Aux.item<float>()}");
        Assert.Equal(r.LoadBalancingLoss, d.LoadBalancingLoss, 5);
        using var xGrad = x.grad;
        worst = Math.Max(worst, TensorAssert.Close(dx, xGrad, tolerance, "∂x"));
        worst = Math.Max(worst, CompareParameterGrads(reference, decomposed, tolerance));
        return worst;
    }

    private static double CompareParameterGrads(ReferenceMoeLayer reference, DecomposedMoeLayer decomposed, double tolerance)
    {
        var expected = reference.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var worst = 0.0;
        var count = 0;
        foreach (var (name, parameter) in decomposed.NamedParameters())
        {
            Assert.True(expected.TryGetValue(name, out var twin), $"reference has no parameter {name}");
            using var actualGrad = parameter.grad;
            using var expectedGrad = twin.grad;
            worst = Math.Max(worst, TensorAssert.Close(actualGrad, expectedGrad, tolerance, $"∂{name}", parameter.shape));
            count++;
        }
        Assert.Equal(expected.Count, count);
        return worst;
    }
}
