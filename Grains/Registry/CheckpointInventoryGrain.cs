using MoeCluster.Grains.Checkpoints;
using Orleans.Concurrency;

namespace MoeCluster.Grains.Registry;

/// <summary>Reads the store's version lists of a layer's router and experts; stateless, so it runs on the silo the client reached.</summary>
[StatelessWorker]
public sealed class CheckpointInventoryGrain(ICheckpointStore store) : Grain, ICheckpointInventoryGrain
{
    public async Task<CheckpointVersions[]> List(string layer)
    {
        var spec = await GrainFactory.GetGrain<IMoeRouterGrain>(layer).GetSpec()
            ?? throw new InvalidOperationException($"layer \"{layer}\" does not exist; create it first");
        var keys = new List<string> { CheckpointCodec.RouterKey(layer) };
        for (int e = 0; e < spec.NumExperts; e++) keys.Add(CheckpointCodec.ExpertKey(layer, e));
        var versions = await Task.WhenAll(keys.Select(k => store.ListVersionsAsync(k)));
        return keys.Select((k, i) => new CheckpointVersions(k, versions[i])).ToArray();
    }
}
