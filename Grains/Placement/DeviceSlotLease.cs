namespace MoeCluster.Grains.Placement;

/// <summary>
/// A grain's lease on a device slot of its silo (experts and their replicas): claimed when it
/// activates, renewed by a timer (so that a slot registry that came back learns its device), and
/// released when it deactivates.
/// </summary>
internal static class DeviceSlotLease
{
    private static readonly TimeSpan Renewal = TimeSpan.FromSeconds(10);

    /// <summary>Claims a slot for <paramref name="grain"/>, keeps it renewed, and returns its device.</summary>
    public static async Task<string> Claim(Grain grain, IGrainFactory grains, IClusterSlotView slots)
    {
        var registry = grains.GetGrain<IDeviceSlotRegistryGrain>(0);
        var id = grain.GetGrainId().ToString();
        var device = await registry.Claim(id, slots.Local, slots.LiveSilos());
        grain.RegisterGrainTimer(() => registry.Renew(id, slots.Local.Silo, device),
            new GrainTimerCreationOptions(Renewal, Renewal) { Interleave = true });
        return device;
    }

    public static Task Release(Grain grain, IGrainFactory grains, IClusterSlotView slots) =>
        grains.GetGrain<IDeviceSlotRegistryGrain>(0).Release(grain.GetGrainId().ToString(), slots.Local.Silo);
}
