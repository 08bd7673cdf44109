using MoeCluster.Grains.Placement;
using Microsoft.Extensions.Logging;

namespace MoeCluster.Grains.Registry;

/// <summary>The cluster's slot leases in memory; see <see cref="SlotLedger"/>.</summary>
[KeepAlive]
public sealed class DeviceSlotRegistryGrain(ILogger<DeviceSlotRegistryGrain> logger) : Grain, IDeviceSlotRegistryGrain
{
    private readonly SlotLedger ledger = new();

    public Task<SiloAddress> Place(string expert, SiloSlots[] liveSilos, SiloAddress? hint)
    {
        var silo = ledger.Place(expert, liveSilos, hint);
        logger.LogDebug("Placed {Expert} on {Silo}", expert, silo);
        return Task.FromResult(silo);
    }

    public Task<string> Claim(string expert, SiloSlots local, SiloSlots[] liveSilos) =>
        Task.FromResult(ledger.Claim(expert, local, liveSilos));

    public Task Renew(string expert, SiloAddress silo, string device)
    {
        ledger.Renew(expert, silo, device);
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
