using MoeCluster.Client;
using static TorchSharp.torch;

namespace MoeCluster.Bench;

/// <summary>
/// (b) and (c): a layer of a cluster, called through the SDK as a training loop calls it; each
/// batch as one micro-batch, or as <paramref name="microBatches"/> in flight at once
/// (<see cref="RemoteMoeLayer.ForwardMicroBatchesAsync"/>).
/// </summary>
public sealed class ClusterLayerUnderTest(RemoteMoeLayer layer, int microBatches = 1, bool ownsLayer = true) : ILayerUnderTest
{
    public static async Task<ClusterLayerUnderTest> CreateAsync(MoeClusterClient client, string name, LayerSpec spec) =>
        new(await client.CreateLayerAsync(name, spec));

    /// <summary>The same layer, each batch sent as <paramref name="count"/> micro-batches in flight; disposing it leaves the layer.</summary>
    public ClusterLayerUnderTest InFlight(int count) => new(layer, count, ownsLayer: false);

    // One micro-batch takes the SDK's plain path (ForwardMicroBatchesAsync hands it straight on).
    public async Task<long> ForwardAsync(Tensor x)
    {
        using var forward = await layer.ForwardMicroBatchesAsync(x, microBatches, train: false);
        return forward.Routing.Routed.Sum();
    }

    public async Task<long> TrainStepAsync(Tensor x, Tensor dy)
    {
        long routed;
        using (var forward = await layer.ForwardMicroBatchesAsync(x, microBatches))
        {
            routed = forward.Routing.Routed.Sum();
            using var dx = await layer.BackwardMicroBatchesAsync(forward, dy);
        }
        await layer.StepAsync();
        return routed;
    }

    /// <summary>Deletes the layer, so that its experts free their slots for the next configuration.</summary>
    public async ValueTask DisposeAsync()
    {
        if (ownsLayer) await layer.DeleteAsync();
    }
}
