using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Tests.Numerics;

/// <summary>Norm-wise comparisons: ‖a − b‖₂ / ‖b‖₂, so one tolerance fits tensors of any scale.</summary>
public static class TensorAssert
{
    /// <summary>‖a − b‖ / ‖b‖ in Float64; ‖a − b‖ itself when b is 0; a null tensor counts as zeros.</summary>
    public static double RelativeError(Tensor? actual, Tensor? expected, long[]? shape = null)
    {
        using var scope = NewDisposeScope();
        var s = shape ?? actual?.shape ?? expected?.shape ?? throw new ArgumentException("both tensors are null and no shape was given");
        var a = actual?.to(ScalarType.Float64) ?? zeros(s, ScalarType.Float64);
        var b = expected?.to(ScalarType.Float64) ?? zeros(s, ScalarType.Float64);
        Assert.Equal(b.shape, a.shape);
        var diff = a.sub(b).norm().item<double>();
        var scale = b.norm().item<double>();
        return scale == 0 ? diff : diff / scale;
    }

    public static double Close(Tensor? actual, Tensor? expected, double tolerance, string what, long[]? shape = null)
    {
        var error = RelativeError(actual, expected, shape);
        Assert.True(error <= tolerance, $"{what}: relative error {error:E3} exceeds {tolerance:E1}");
        return error;
    }
}
