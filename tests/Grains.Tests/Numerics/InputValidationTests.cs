using MoeCluster.Grains.Numerics;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Tests.Numerics;

/// <summary>Bad input fails with an ArgumentException naming the problem and the expected value.</summary>
public class InputValidationTests
{
    private static readonly MoeLayerConfig Valid = new() { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2 };

    public static TheoryData<MoeLayerConfig, string> BadConfigs() => new()
    {
        { Valid with { NumExperts = 0 }, "E (number of experts) is 0; expected 1 ≤ E ≤ 4096" },
        { Valid with { NumExperts = 5000 }, "E (number of experts) is 5000; expected 1 ≤ E ≤ 4096" },
        { Valid with { TopK = 0 }, "k (top-k) is 0; expected 1 ≤ k ≤ E = 4" },
        { Valid with { TopK = 5 }, "k (top-k) is 5; expected 1 ≤ k ≤ E = 4" },
        { Valid with { CapacityFactor = -1 }, "capacity factor is -1; expected a finite number ≥ 0 (0 = dropless)" },
        { Valid with { CapacityFactor = double.NaN }, "capacity factor is NaN; expected a finite number ≥ 0 (0 = dropless)" },
        { Valid with { EvalCapacityFactor = double.PositiveInfinity }, "eval capacity factor is Infinity; expected a finite number ≥ 0 (0 = dropless)" },
        { Valid with { DModel = 0 }, "d_model is 0; expected a positive size" },
        { Valid with { DFF = -3 }, "d_ff is -3; expected a positive size" },
        { Valid with { MinCapacity = -1 }, "min_capacity is -1; expected ≥ 0" },
        { Valid with { JitterEpsilon = 1.5 }, "jitter ε is 1.5; expected 0 ≤ ε < 1" },
        { Valid with { AuxLossWeight = -0.1 }, "aux loss weight α is -0.1; expected a finite number ≥ 0" },
        { Valid with { ZLossWeight = double.NaN }, "z-loss weight β is NaN; expected a finite number ≥ 0" },
        { Valid with { ComputeDType = ScalarType.Float16 }, "compute dtype Float16 is not supported; expected Float32 or BFloat16" },
        { Valid with { ComputeDType = ScalarType.Int32 }, "compute dtype Int32 is not supported; expected Float32 or BFloat16" },
    };

    [Theory]
    [MemberData(nameof(BadConfigs))]
    public void Bad_config_is_refused_by_every_layer_builder(MoeLayerConfig config, string message)
    {
        Assert.Equal(message, Assert.Throws<ArgumentException>(() => config.Validate()).Message);
        Assert.Equal(message, Assert.Throws<ArgumentException>(() => new TopKRouter(config, 1)).Message);
        Assert.Equal(message, Assert.Throws<ArgumentException>(() => new ReferenceMoeLayer(config, 1)).Message);
        Assert.Equal(message, Assert.Throws<ArgumentException>(() => new DecomposedMoeLayer(config, 1)).Message);
    }

    public static TheoryData<long[], ScalarType, string> BadInputs() => new()
    {
        { [8], ScalarType.Float32, "x must be 2-D [tokens, d_model]; got shape [8] (Parameter 'x')" },
        { [2, 3, 8], ScalarType.Float32, "x must be 2-D [tokens, d_model]; got shape [2, 3, 8] (Parameter 'x')" },
        { [5, 6], ScalarType.Float32, "x has d_model 6; the layer expects 8 (Parameter 'x')" },
        { [5, 8], ScalarType.Int64, "x has dtype Int64; expected Float32, BFloat16 or Float16 (Parameter 'x')" },
        { [5, 8], ScalarType.Float64, "x has dtype Float64; expected Float32, BFloat16 or Float16 (Parameter 'x')" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public void Bad_input_is_refused_and_nothing_is_left_pending(long[] shape, ScalarType dtype, string message)
    {
        using var x = zeros(shape, dtype);
        using var reference = new ReferenceMoeLayer(Valid, 1);
        using var decomposed = new DecomposedMoeLayer(Valid, 1);
        Assert.Equal(message, Assert.Throws<ArgumentException>(() => reference.Forward(x, train: true)).Message);
        Assert.Equal(message, Assert.Throws<ArgumentException>(() => decomposed.Forward(1, x, train: true)).Message);
        Assert.Equal(0, decomposed.PendingCount);
        Assert.All(decomposed.Experts, e => Assert.Equal(0, e.PendingCount));
    }

    [Fact]
    public void Bad_gradient_is_refused_and_the_batch_stays_pending()
    {
        using var layer = new DecomposedMoeLayer(Valid, 1);
        using var x = ones(6, 8);
        using var forward = layer.Forward(3, x, train: true);
        using var wrong = ones(6, 7);
        var error = Assert.Throws<ArgumentException>(() => layer.Backward(3, wrong));
        Assert.Equal("dy has shape [6, 7]; expected [6, 8] like the forward's output (Parameter 'dy')", error.Message);
        Assert.Equal(1, layer.PendingCount);
        using var right = ones(6, 8);
        using var dx = layer.Backward(3, right);
        Assert.Equal(new long[] { 6, 8 }, dx.shape);
        Assert.Equal(0, layer.PendingCount);
    }

    [Fact]
    public void Backward_of_an_unknown_or_consumed_batch_is_a_clear_error()
    {
        using var layer = new DecomposedMoeLayer(Valid, 1);
        using var x = ones(4, 8);
        using var dy = ones(4, 8);
        using (layer.Forward(1, x, train: true))
        using (layer.Backward(1, dy)) { }
        var again = Assert.Throws<InvalidOperationException>(() => layer.Backward(1, dy));
        Assert.Equal("no training forward is pending for batch 1: it never ran with train = true, or its backward already ran", again.Message);

        using var expert = new ExpertComputation(ExpertFfn.Create(Valid, 1));
        var unknown = Assert.Throws<InvalidOperationException>(() => expert.Backward(99, dy));
        Assert.Equal("no saved forward for batch 99 on this expert: it never ran in training, its backward already ran, or it expired", unknown.Message);
    }

    [Fact]
    public void Empty_batch_is_valid_and_gives_an_empty_output()
    {
        using var reference = new ReferenceMoeLayer(Valid, 1);
        using var layer = new DecomposedMoeLayer(Valid, 1);
        using var x = zeros(0, 8);
        using var r = reference.Forward(x, train: true);
        using var d = layer.Forward(0, x, train: true);
        Assert.Equal(new long[] { 0, 8 }, r.Y.shape);
        Assert.Equal(new long[] { 0, 8 }, d.Y.shape);
        Assert.Equal(0, d.AuxLoss);
        using var dy = zeros(0, 8);
        using var dx = layer.Backward(0, dy);
        Assert.Equal(new long[] { 0, 8 }, dx.shape);
    }

    [Fact]
    public void Expired_saved_forwards_are_freed_and_counted()
    {
        using var expert = new ExpertComputation(ExpertFfn.Create(Valid, 1));
        using var x = ones(3, 8);
        using (expert.Forward(1, x, train: true)) { }
        using (expert.Forward(2, x, train: true)) { }
        Assert.Equal(2, expert.PendingCount);
        Assert.Equal(0, expert.DiscardOlderThan(TimeSpan.FromHours(1)));
        Assert.Equal(2, expert.DiscardOlderThan(TimeSpan.Zero));
        Assert.Equal(0, expert.PendingCount);
    }
}
