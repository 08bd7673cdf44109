using Orleans.Concurrency;

namespace MoeCluster;

/// <summary>
/// The cluster's leases of device slots to experts (one registry per cluster, key 0). The
/// placement director asks it where a new expert goes; an activating expert claims its slot;
/// leases on silos that are no longer alive are dropped at the next call.
/// </summary>
public interface IDeviceSlotRegistryGrain : IGrainWithIntegerKey
{
    /// <summary>
    /// Chooses the silo for a new activation of <paramref name="expert"/>: its existing lease on a
    /// live silo, else the hinted silo if it has a free slot, else the silo with a free slot that
    /// is least loaded. Throws <see cref="DeviceCapacityException"/> when no slot is free (unless
    /// a silo allows overcommit).
    /// </summary>
    Task<SiloAddress> Place(string expert, SiloSlots[] liveSilos, SiloAddress? hint);

    /// <summary>Leases a device on <paramref name="local"/> to an activating expert and returns it.</summary>
    Task<string> Claim(string expert, SiloSlots local, SiloSlots[] liveSilos);

    /// <summary>Re-asserts a lease the expert holds, so a registry that restarted (its silo died) learns it again.</summary>
    Task Renew(string expert, SiloAddress silo, string device);

    Task Release(string expert, SiloAddress silo);

    /// <summary>Places nothing more on <paramref name="silo"/>: it is shutting down and handing its experts off.</summary>
    Task Drain(SiloAddress silo);

    /// <summary>Fails with <see cref="DeviceCapacityException"/> unless <paramref name="needed"/> more slots are free.</summary>
    Task EnsureFree(int needed, string forWhat, SiloSlots[] liveSilos);

    [AlwaysInterleave]
    Task<SlotUsage[]> GetUsage(SiloSlots[] liveSilos);
}
