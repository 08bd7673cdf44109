using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Numerics;

/// <summary>
/// A layer's forward result: y (in the input's dtype), the weighted aux loss α·L_aux + β·L_z
/// and its two raw parts, and the routing stats. Disposing it frees y.
/// </summary>
public sealed record MoeLayerOutput(Tensor Y, double AuxLoss, double LoadBalancingLoss, double ZLoss, RoutingStats Stats) : IDisposable
{
    public void Dispose() => Y.Dispose();
}
