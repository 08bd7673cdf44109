using TorchSharp;

namespace MoeCluster.Client;

/// <summary>
/// A forward through a remote layer: y, the weighted aux loss α·L_aux + β·L_z and its raw
/// parts, the routing counts, and the batch id its backward must name. Disposing frees y.
/// </summary>
public sealed record RemoteLayerForward(
    long BatchId,
    torch.Tensor Y,
    double AuxLoss,
    double LoadBalancingLoss,
    double ZLoss,
    RoutingSummary Routing) : IDisposable
{
    public void Dispose() => Y.Dispose();
}
