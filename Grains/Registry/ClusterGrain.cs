using MoeCluster.Grains.Placement;
using Orleans.Concurrency;

namespace MoeCluster.Grains.Registry;

/// <summary>Answers on whichever silo the client reaches; the live silos come from that silo's view.</summary>
[StatelessWorker]
public sealed class ClusterGrain(IClusterSlotView slots) : Grain, IMoeClusterGrain
{
    public Task<SlotUsage[]> GetSlotUsage() =>
        GrainFactory.GetGrain<IDeviceSlotRegistryGrain>(0).GetUsage(slots.LiveSilos());
}
