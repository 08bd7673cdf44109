using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Numerics;

/// <summary>Shape and dtype checks shared by the reference and the decomposed layer.</summary>
public static class LayerInputChecks
{
    public static bool IsSupportedFloat(ScalarType t) =>
        t is ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16;

    /// <summary>Checks a micro-batch <c>x</c> of shape [T, d_model].</summary>
    public static void Input(Tensor x, int dModel, string name = "x")
    {
        ArgumentNullException.ThrowIfNull(x, name);
        if (x.dim() != 2)
            throw new ArgumentException($"{name} must be 2-D [tokens, d_model]; got shape {Shape(x)}", name);
        if (x.shape[1] != dModel)
            throw new ArgumentException($"{name} has d_model {x.shape[1]}; the layer expects {dModel}", name);
        if (!IsSupportedFloat(x.dtype))
            throw new ArgumentException($"{name} has dtype {x.dtype}; expected Float32, BFloat16 or Float16", name);
    }

    /// <summary>Checks a gradient against the shape of what it is the gradient of.</summary>
    public static void GradientLike(Tensor grad, long tokens, int dModel, string name = "dy")
    {
        ArgumentNullException.ThrowIfNull(grad, name);
        if (grad.dim() != 2 || grad.shape[0] != tokens || grad.shape[1] != dModel)
            throw new ArgumentException($"{name} has shape {Shape(grad)}; expected [{tokens}, {dModel}] like the forward's output", name);
        if (!IsSupportedFloat(grad.dtype))
            throw new ArgumentException($"{name} has dtype {grad.dtype}; expected Float32, BFloat16 or Float16", name);
    }

    public static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
}
