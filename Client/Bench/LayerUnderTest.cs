using static TorchSharp.torch;

namespace MoeCluster.Bench;

/// <summary>A layer the benchmark times: the reference layer, or the cluster through the SDK.</summary>
public interface ILayerUnderTest : IAsyncDisposable
{
    /// <summary>An inference forward; returns the assignments the experts computed.</summary>
    Task<long> ForwardAsync(Tensor x);

    /// <summary>A training forward, its backward for ∂L/∂y = <paramref name="dy"/> and ∂L/∂aux = 1, and an optimizer step; returns the assignments computed.</summary>
    Task<long> TrainStepAsync(Tensor x, Tensor dy);
}
