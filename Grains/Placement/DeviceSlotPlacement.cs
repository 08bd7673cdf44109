using Orleans.Placement;

namespace MoeCluster.Grains.Placement;

/// <summary>
/// Places an expert on a silo with a free device slot, least loaded first; the leases are kept
/// by <see cref="IDeviceSlotRegistryGrain"/>. The director lives in Hosting.
/// </summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking]
public sealed class DeviceSlotPlacement : PlacementStrategy
{
    public static readonly DeviceSlotPlacement Instance = new();
}

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class DeviceSlotPlacementAttribute() : PlacementAttribute(DeviceSlotPlacement.Instance);
