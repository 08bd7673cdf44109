using Orleans.Concurrency;

namespace MoeCluster.Grains.Routing;

/// <summary>See <see cref="IMoeLayerGateway"/>: forwards to the router from the client's gateway silo.</summary>
[StatelessWorker]
public sealed class LayerGatewayGrain : Grain, IMoeLayerGateway
{
    private IMoeRouterGrain Router => GrainFactory.GetGrain<IMoeRouterGrain>(this.GetPrimaryKeyString());

    public Task<LayerStats> Create(LayerSpec spec, CancellationToken cancellationToken) => Router.Create(spec);

    public Task<LayerForwardResult> Forward(long batchId, TensorPayload x, bool train, TokenLabels? labels, string? epoch, CancellationToken cancellationToken) =>
        Router.Forward(batchId, x, train, labels, epoch);

    public Task<TensorPayload> Backward(long batchId, TensorPayload dy, double auxGrad, CancellationToken cancellationToken) =>
        Router.Backward(batchId, dy, auxGrad);

    public Task<StepResult> Step(long stepId, string? epoch, CancellationToken cancellationToken) => Router.Step(stepId, epoch);

    public Task<long> Recover(CancellationToken cancellationToken) => Router.Recover();

    public Task<string> GetEpoch(CancellationToken cancellationToken) => Router.GetEpoch();

    public Task<long> GetVersion(CancellationToken cancellationToken) => Router.GetVersion();
}
