using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Client.Tests;

/// <summary>
/// The SDK's finite-value check: its fast path (one sum) must neither pass a NaN or an infinity
/// nor refuse finite values whose Float32 sum overflows. The messages are pinned in
/// Cluster.Tests' BadInputCatalogueTests; here the cases a sum could get wrong.
/// </summary>
public class LayerInputGuardTests
{
    [Fact]
    public void Finite_values_whose_sum_overflows_Float32_pass()
    {
        using var huge = full(4, 6, 3e38f);
        Assert.True(float.IsInfinity(huge.sum().item<float>())); // the fast path alone would refuse it
        LayerInputGuard.CheckFinite(huge, "x");
        using var bf16 = huge.to(ScalarType.BFloat16);
        LayerInputGuard.CheckFinite(bf16, "x");
    }

    [Theory]
    [InlineData(float.NaN, "x holds 1 NaN and 0 infinite value(s), the first in row 2")]
    [InlineData(float.PositiveInfinity, "x holds 0 NaN and 1 infinite value(s), the first in row 2")]
    public void A_single_bad_value_among_huge_ones_is_found(float bad, string start)
    {
        // +∞ and −∞ among the rest would sum to NaN, and 3e38s overflow: neither may hide the value.
        using var x = full(4, 6, -3e38f);
        x[2, 5] = tensor(bad);
        var e = Assert.Throws<ArgumentException>(() => LayerInputGuard.CheckFinite(x, "x"));
        Assert.StartsWith(start, e.Message);
    }

    [Fact]
    public void Infinities_of_both_signs_are_counted()
    {
        using var x = zeros(3, 2);
        x[0, 0] = tensor(float.PositiveInfinity);
        x[1, 1] = tensor(float.NegativeInfinity);
        var e = Assert.Throws<ArgumentException>(() => LayerInputGuard.CheckFinite(x, "dy"));
        Assert.StartsWith("dy holds 0 NaN and 2 infinite value(s), the first in row 0", e.Message);
    }
}
