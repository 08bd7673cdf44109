using MoeCluster.Client;
using static TorchSharp.torch;

namespace MoeCluster.Bench;

/// <summary>(b) and (c): a layer of a cluster, called through the SDK as a training loop calls it.</summary>
public sealed class ClusterLayerUnderTest(RemoteMoeLayer layer) : ILayerUnderTest
{
    public static async Task<ClusterLayerUnderTest> CreateAsync(MoeClusterClient client, string name, LayerSpec spec) =>
        new(await client.CreateLayerAsync(name, spec));

    public async Task<long> ForwardAsync(Tensor x)
    {
        using var forward = await layer.ForwardAsync(x, train: false);
        return forward.Routing.Routed.Sum();
    }

    public async Task<long> TrainStepAsync(Tensor x, Tensor dy)
    {
        long routed;
        using (var forward = await layer.ForwardAsync(x))
        {
            routed = forward.Routing.Routed.Sum();
            using var dx = await layer.BackwardAsync(forward.BatchId, dy);
        }
        await layer.StepAsync();
        return routed;
    }

    /// <summary>Deletes the layer, so that its experts free their slots for the next configuration.</summary>
    public async ValueTask DisposeAsync() => await layer.DeleteAsync();
}
