namespace MoeCluster;

/// <summary>
/// The SDK's door to a layer's router (key: the layer's name): a stateless worker, so it runs on
/// the very silo whose gateway the client reached, and forwards each call to the router. A call
/// that a client sends straight to a silo that then dies waits out the full response timeout;
/// forwarded by a silo, it fails as soon as the cluster declares that silo dead, which is what
/// lets a layer recover within seconds. The cancellation tokens let the SDK abandon calls that
/// were in flight through a gateway that itself went away.
/// </summary>
public interface IMoeLayerGateway : IGrainWithStringKey
{
    /// <summary>Creates the layer from the client's gateway silo, where its router is then placed (see RouterGrain).</summary>
    Task<LayerStats> Create(LayerSpec spec, CancellationToken cancellationToken = default);

    Task<LayerForwardResult> Forward(long batchId, TensorPayload x, bool train, TokenLabels? labels, string? epoch = null, CancellationToken cancellationToken = default);
    Task<TensorPayload> Backward(long batchId, TensorPayload dy, double auxGrad, CancellationToken cancellationToken = default);
    Task<StepResult> Step(long stepId, string? epoch, CancellationToken cancellationToken = default);
    Task<long> Recover(CancellationToken cancellationToken = default);
    Task<string> GetEpoch(CancellationToken cancellationToken = default);
    Task<long> GetVersion(CancellationToken cancellationToken = default);
}
