using MoeCluster.Grains.Placement;
using Microsoft.Extensions.Logging;

namespace MoeCluster.Grains.Registry;

/// <summary>
/// The cluster's slot leases in memory; see <see cref="SlotLedger"/>. When it (re)activates — its
/// silo died — it first learns where the experts already are from Orleans' own activation list,
/// so that experts reactivated after the same failure are not piled onto "empty" silos; their
/// devices it learns from the experts' periodic lease renewals.
/// </summary>
[KeepAlive]
public sealed class DeviceSlotRegistryGrain(ILogger<DeviceSlotRegistryGrain> logger) : Grain, IDeviceSlotRegistryGrain
{
    private readonly SlotLedger ledger = new();

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        var activations = await GrainFactory.GetGrain<IManagementGrain>(0).GetDetailedGrainStatistics();
        var experts = activations.Where(a => a.GrainId.Type.ToString() == "expert").ToList();
        foreach (var a in experts) ledger.Renew(a.GrainId.ToString(), a.SiloAddress, device: "");
        if (experts.Count > 0) logger.LogInformation("Slot registry activated; found {Count} expert(s) already placed", experts.Count);
    }

    public Task<SiloAddress> Place(string expert, SiloSlots[] liveSilos, SiloAddress? hint)
    {
        var silo = ledger.Place(expert, liveSilos, hint);
        logger.LogDebug("Placed {Expert} on {Silo}", expert, silo);
        return Task.FromResult(silo);
    }

    public Task<string> Claim(string expert, SiloSlots local, SiloSlots[] liveSilos)
    {
        var device = ledger.Claim(expert, local, liveSilos);
        if (ledger.Overcommitted is { } warning) logger.LogWarning("{Warning}", warning);
        return Task.FromResult(device);
    }

    public Task Renew(string expert, SiloAddress silo, string device)
    {
        ledger.Renew(expert, silo, device);
        return Task.CompletedTask;
    }

    public Task Drain(SiloAddress silo)
    {
        ledger.Drain(silo);
        logger.LogInformation("Silo {Silo} is draining: no new experts go there", silo);
        return Task.CompletedTask;
    }

    public Task Release(string expert, SiloAddress silo)
    {
        ledger.Release(expert, silo);
        return Task.CompletedTask;
    }

    public Task EnsureFree(int needed, string forWhat, SiloSlots[] liveSilos)
    {
        ledger.EnsureFree(needed, forWhat, liveSilos);
        return Task.CompletedTask;
    }

    public Task<SlotUsage[]> GetUsage(SiloSlots[] liveSilos) => Task.FromResult(ledger.Usage(liveSilos));
}
