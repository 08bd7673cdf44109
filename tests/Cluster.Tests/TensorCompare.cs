using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>Norm-wise relative error ‖a − b‖ / ‖b‖, as the numerics parity tests use it.</summary>
public static class TensorCompare
{
    public static double RelativeError(Tensor actual, Tensor expected)
    {
        using var scope = NewDisposeScope();
        Assert.Equal(expected.shape, actual.shape);
        var a = actual.to(ScalarType.Float64);
        var b = expected.to(ScalarType.Float64);
        var diff = a.sub(b).norm().item<double>();
        var scale = b.norm().item<double>();
        return scale == 0 ? diff : diff / scale;
    }

    public static void Close(Tensor actual, Tensor expected, double tolerance, string what)
    {
        var error = RelativeError(actual, expected);
        Assert.True(error <= tolerance, $"{what}: relative error {error:E3} exceeds {tolerance:E1}");
    }

    public static void WeightsClose(IReadOnlyDictionary<string, Tensor> actual, IReadOnlyDictionary<string, Tensor> expected, double tolerance)
    {
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, value) in expected) Close(actual[name], value, tolerance, name);
    }
}
