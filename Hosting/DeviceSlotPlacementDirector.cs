using MoeCluster.Grains.Placement;
using Orleans.Runtime.Placement;

namespace MoeCluster.Hosting;

/// <summary>
/// Places a new expert activation where the slot registry leases it a device slot: its current
/// lease, a placement hint (a live move), or the least-loaded silo with a free slot.
/// </summary>
public sealed class DeviceSlotPlacementDirector(IGrainFactory grains, IClusterSlotView view) : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var compatible = context.GetCompatibleSilos(target);
        var live = view.LiveSilos().Where(s => compatible.Contains(s.Silo)).ToArray();
        var hint = IPlacementDirector.GetPlacementHint(target.RequestContextData, compatible);
        return grains.GetGrain<IDeviceSlotRegistryGrain>(0).Place(target.GrainIdentity.ToString(), live, hint);
    }
}
