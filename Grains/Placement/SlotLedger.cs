namespace MoeCluster.Grains.Placement;

/// <summary>
/// The bookkeeping behind <see cref="IDeviceSlotRegistryGrain"/>: which expert holds which
/// device slot of which silo. A placement is recorded at once, so that experts placed in quick
/// succession spread out instead of all seeing the same empty silo.
/// </summary>
public sealed class SlotLedger
{
    private sealed record Lease(SiloAddress Silo, string Device);

    private readonly Dictionary<string, Lease> leases = new();
    private readonly HashSet<SiloAddress> draining = new();

    public int Count => leases.Count;

    /// <summary>Set by the last <see cref="Claim"/> when it placed an expert beyond its silo's slots.</summary>
    public string? Overcommitted { get; private set; }

    public SiloAddress Place(string expert, SiloSlots[] live, SiloAddress? hint)
    {
        Prune(live);
        // A hint elsewhere (a live move) takes the lease with it when the hinted silo has room.
        if (leases.TryGetValue(expert, out var existing) && !draining.Contains(existing.Silo)
            && (hint is null || hint.Equals(existing.Silo) || !live.Any(s => s.Silo.Equals(hint) && !draining.Contains(s.Silo) && Free(s) > 0)))
            return existing.Silo;
        live = live.Where(s => !draining.Contains(s.Silo)).ToArray();
        var withRoom = live.Where(s => Free(s) > 0).ToArray();
        SiloSlots chosen;
        if (hint is not null && withRoom.FirstOrDefault(s => s.Silo.Equals(hint)) is { } hinted) chosen = hinted;
        else if (withRoom.Length > 0) chosen = LeastLoaded(withRoom);
        else if (live.Where(s => s.AllowOvercommit && s.Capacity > 0).ToArray() is { Length: > 0 } overcommit) chosen = LeastLoaded(overcommit);
        else throw Full($"no free device slot for {expert}", live);
        leases[expert] = new Lease(chosen.Silo, ChooseDevice(chosen));
        return chosen.Silo;
    }

    public string Claim(string expert, SiloSlots local, SiloSlots[] live)
    {
        Prune(live);
        // A lease learned from Orleans' activation list (the registry itself came back) has no
        // device yet: the expert gets one as a new lease would.
        if (leases.TryGetValue(expert, out var existing) && existing.Silo.Equals(local.Silo) && existing.Device != "") return existing.Device;
        leases.Remove(expert); // placed elsewhere than its lease said (a hint, a race), or no device known: the activation wins
        // The activation exists already; refusing it now would fail a recovery rather than prevent
        // overload. New layers are held to the slots by EnsureFree and Place; this is reported.
        Overcommitted = Free(local) <= 0 ? $"{expert} activated on silo {local.Silo}, which has no free device slot; it is overcommitted" : null;
        var device = ChooseDevice(local);
        leases[expert] = new Lease(local.Silo, device);
        return device;
    }

    public void Renew(string expert, SiloAddress silo, string device) => leases[expert] = new Lease(silo, device);

    public void Drain(SiloAddress silo) => draining.Add(silo);

    public void Release(string expert, SiloAddress silo)
    {
        if (leases.TryGetValue(expert, out var lease) && lease.Silo.Equals(silo)) leases.Remove(expert);
    }

    public void EnsureFree(int needed, string forWhat, SiloSlots[] live)
    {
        Prune(live);
        var free = live.Sum(s => Math.Max(0, Free(s)));
        if (free < needed && !live.Any(s => s.AllowOvercommit && s.Capacity > 0))
            throw Full($"{forWhat} needs {needed} free device slots but only {free} are free", live);
    }

    public SlotUsage[] Usage(SiloSlots[] live)
    {
        Prune(live);
        return live.SelectMany(s => s.Devices.Select(d => new SlotUsage(
            s.Silo.ToString(), d.Device, d.Capacity,
            leases.Values.Count(l => l.Silo.Equals(s.Silo) && l.Device == d.Device)))).ToArray();
    }

    /// <summary>Drops the leases of silos that are no longer alive: their slots died with them.</summary>
    private void Prune(SiloSlots[] live)
    {
        var alive = live.Select(s => s.Silo).ToHashSet();
        foreach (var (expert, lease) in leases.Where(p => !alive.Contains(p.Value.Silo)).ToList())
            leases.Remove(expert);
        draining.RemoveWhere(s => !alive.Contains(s));
    }

    private int Leased(SiloAddress silo) => leases.Values.Count(l => l.Silo.Equals(silo));

    private int Free(SiloSlots s) => s.Capacity - Leased(s.Silo);

    private SiloSlots LeastLoaded(IEnumerable<SiloSlots> silos) => silos
        .OrderBy(s => (double)Leased(s.Silo) / Math.Max(1, s.Capacity))
        .ThenBy(s => Leased(s.Silo))
        .ThenBy(s => s.Silo.ToString(), StringComparer.Ordinal)
        .First();

    private string ChooseDevice(SiloSlots silo)
    {
        int LeasedOn(DeviceSlot d) => leases.Values.Count(l => l.Silo.Equals(silo.Silo) && l.Device == d.Device);
        var device = silo.Devices
            .Where(d => d.Capacity > 0)
            .OrderBy(d => LeasedOn(d) >= d.Capacity ? 1 : 0)
            .ThenBy(d => (double)LeasedOn(d) / d.Capacity)
            .FirstOrDefault()
            ?? throw new DeviceCapacityException($"silo {silo.Silo} advertises no device slots; start it with --devices and --experts-per-device ≥ 1");
        return device.Device;
    }

    private DeviceCapacityException Full(string what, SiloSlots[] live)
    {
        var total = live.Sum(s => s.Capacity);
        var detail = string.Join("; ", live.Select(s =>
            $"{s.Silo}: {string.Join(", ", s.Devices.Select(d => $"{d.Device} ×{d.Capacity}"))} ({Leased(s.Silo)} leased)"));
        return new DeviceCapacityException(
            $"{what}: the cluster's {live.Length} live silo(s) offer {total} expert slot(s) in all [{detail}]; " +
            "add a silo, raise --experts-per-device, or start silos with --overcommit");
    }
}
