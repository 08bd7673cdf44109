using MoeCluster.Grains.Numerics;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Tests.Numerics;

/// <summary>
/// Expert dropout: masks drawn from (seed, step, batch, expert) make the decomposed layer equal
/// the reference with dropout too, repeat exactly, and drop at the set rate; p = 0 and inference
/// are the plain layer.
/// </summary>
public class ExpertDropoutTests(ITestOutputHelper output)
{
    private static MoeLayerConfig Config(double p, ExpertActivation activation = ExpertActivation.Gelu) => new()
    {
        DModel = 12, DFF = 24, NumExperts = 4, TopK = 2, CapacityFactor = 1.25, MinCapacity = 1,
        Activation = activation, ExpertDropout = p,
    };

    [Theory]
    [InlineData(0.0, ExpertActivation.Gelu, ExpertBackwardMode.KeepGraph)]
    [InlineData(0.4, ExpertActivation.Gelu, ExpertBackwardMode.KeepGraph)]
    [InlineData(0.4, ExpertActivation.SwiGlu, ExpertBackwardMode.Recompute)]
    [InlineData(0.1, ExpertActivation.Gelu, ExpertBackwardMode.Recompute)]
    public void Decomposed_layer_with_dropout_equals_the_reference(double p, ExpertActivation activation, ExpertBackwardMode mode)
    {
        var config = Config(p, activation);
        using var reference = new ReferenceMoeLayer(config, seed: 9, "ffn");
        using var decomposed = new DecomposedMoeLayer(config, seed: 9, "ffn", mode);
        using var generator = new Generator(10);
        using var x = randn(40, config.DModel, generator: generator).requires_grad_(true);
        using var dy = randn(40, config.DModel, generator: generator);

        using var r = reference.Forward(x, train: true, step: 3, batchId: 17);
        using (var loss = r.Y.mul(dy).sum().add(r.Aux)) loss.backward();
        using var d = decomposed.Forward(17, x.detach(), train: true, step: 3);
        using var dx = decomposed.Backward(17, dy);

        TensorAssert.Close(d.Y, r.Y, LayerParityTests.Float32Tolerance, "y");
        using var xGrad = x.grad;
        TensorAssert.Close(dx, xGrad, LayerParityTests.Float32Tolerance, "∂x");
        var expected = reference.named_parameters().ToDictionary(q => q.name, q => q.parameter);
        foreach (var (name, parameter) in decomposed.NamedParameters())
        {
            using var actualGrad = parameter.grad;
            using var expectedGrad = expected[name].grad;
            TensorAssert.Close(actualGrad, expectedGrad, LayerParityTests.Float32Tolerance, $"∂{name}", parameter.shape);
        }
    }

    [Fact]
    public void Dropout_zero_is_the_layer_without_dropout_and_inference_never_drops()
    {
        using var generator = new Generator(3);
        using var x = randn(30, 12, generator: generator);
        using var plain = new ReferenceMoeLayer(Config(0), seed: 4);
        using var dropping = new ReferenceMoeLayer(Config(0.5), seed: 4);
        using var trainPlain = plain.Forward(x, train: true, step: 1, batchId: 2);
        using var trainZero = plain.Forward(x, train: true, step: 5, batchId: 9);
        Assert.True(Same(trainPlain.Y, trainZero.Y), "p = 0 must not depend on step or batch");
        using var evalPlain = plain.Forward(x, train: false);
        using var evalDropping = dropping.Forward(x, train: false);
        Assert.True(Same(evalPlain.Y, evalDropping.Y), "inference must not apply expert dropout");
        using var trainDropping = dropping.Forward(x, train: true, step: 1, batchId: 2);
        Assert.False(Same(trainPlain.Y, trainDropping.Y), "training with p = 0.5 must differ from p = 0");
    }

    [Fact]
    public void A_rerun_repeats_bit_for_bit_and_another_step_or_batch_draws_another_mask()
    {
        var config = Config(0.4);
        Tensor Run(long step, long batch)
        {
            using var layer = new DecomposedMoeLayer(config, seed: 5, "ffn", ExpertBackwardMode.Recompute);
            using var generator = new Generator(6);
            using var x = randn(32, config.DModel, generator: generator);
            using var dy = randn(32, config.DModel, generator: generator);
            using var forward = layer.Forward(batch, x, train: true, step: step);
            using var dx = layer.Backward(batch, dy);
            // y, ∂x and every gradient, flattened, so one comparison covers them all.
            return cat(layer.NamedParameters().Select(p => p.Parameter.grad!.flatten()).Prepend(dx.flatten()).Prepend(forward.Y.flatten()).ToList(), 0);
        }
        using var first = Run(2, 11);
        using var again = Run(2, 11);
        using var otherStep = Run(3, 11);
        using var otherBatch = Run(2, 12);
        Assert.True(Same(first, again), "a rerun with the same (seed, step, batch) must repeat exactly");
        Assert.False(Same(first, otherStep), "another step must draw other masks");
        Assert.False(Same(first, otherBatch), "another batch must draw other masks");
    }

    [Fact]
    public void An_expert_that_takes_over_a_saved_input_redraws_the_same_mask_in_backward()
    {
        // What a hand-off does: the new activation gets only the input and the mask's seed.
        var config = Config(0.4);
        var seed = LayerSeeds.ExpertDropout(1, "ffn", 4, 21, 2);
        using var original = new ExpertComputation(ExpertFfn.Create(config, 8), ExpertBackwardMode.KeepGraph, config.ExpertDropout);
        using var takenOver = new ExpertComputation(ExpertFfn.Create(config, 8), ExpertBackwardMode.KeepGraph, config.ExpertDropout);
        using var generator = new Generator(9);
        using var x = randn(16, config.DModel, generator: generator);
        using var grad = randn(16, config.DModel, generator: generator);
        using (original.Forward(21, x, train: true, seed)) { }
        using var expectedDx = original.Backward(21, grad);
        takenOver.AdoptSavedInput(21, x.clone(), seed);
        using var dx = takenOver.Backward(21, grad);
        Assert.True(Same(dx, expectedDx), "∂x after a take-over must equal the original's");
        foreach (var ((name, a), (_, b)) in takenOver.Ffn.named_parameters().Zip(original.Ffn.named_parameters()))
        {
            using var ga = a.grad!;
            using var gb = b.grad!;
            Assert.True(Same(ga, gb), $"∂{name} after a take-over must equal the original's");
        }
    }

    [Theory]
    [InlineData(0.1)]
    [InlineData(0.4)]
    [InlineData(0.9)]
    public void The_mask_drops_at_the_set_rate_and_scales_what_it_keeps(double p)
    {
        const long rows = 512, hidden = 256;
        using var mask = ExpertDropout.Mask(rows, hidden, p, seed: 123, ScalarType.Float32, CPU);
        var n = rows * hidden;
        var dropped = mask.eq(0).sum().item<long>();
        var rate = (double)dropped / n;
        // Binomial: within 5 standard deviations of p (a false alarm about once in 3.5 million runs).
        var bound = 5 * Math.Sqrt(p * (1 - p) / n);
        output.WriteLine($"p = {p}: dropped {rate:F5} of {n} (bound ±{bound:F5})");
        Assert.InRange(rate, p - bound, p + bound);
        using var kept = mask.masked_select(mask.ne(0));
        Assert.True(kept.eq((float)(1 / (1 - p))).all().item<bool>(), $"kept elements must be 1/(1−p) = {1 / (1 - p)}");
        // Expert-wise independence: the neighbouring expert's mask of the same batch differs.
        using var neighbour = ExpertDropout.Mask(rows, hidden, p, LayerSeeds.ExpertDropout(1, "ffn", 1, 1, 1), ScalarType.Float32, CPU);
        using var own = ExpertDropout.Mask(rows, hidden, p, LayerSeeds.ExpertDropout(1, "ffn", 1, 1, 0), ScalarType.Float32, CPU);
        Assert.False(Same(own, neighbour));
    }

    private static bool Same(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape)) return false;
        using var equal = a.eq(b).all();
        return equal.item<bool>();
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(-0.1)]
    [InlineData(double.NaN)]
    public void A_rate_outside_zero_to_one_is_refused(double p)
    {
        var error = Assert.Throws<ArgumentException>(() => Config(p).Validate());
        Assert.Equal($"expert dropout is {p}; expected 0 ≤ p < 1 (0 = no dropout)", error.Message);
    }
}
