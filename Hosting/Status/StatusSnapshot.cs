using MoeCluster.Hosting.Telemetry;

namespace MoeCluster.Hosting.Status;

/// <summary>What the MoE status page shows, as <c>/api/moe</c> serves it: slots, layers, experts and this silo's counters.</summary>
public sealed record StatusSnapshot(
    string Silo,
    DateTime Time,
    SlotUsage[] Slots,
    StatusLayer[] Layers,
    long RecoveriesOnThisSilo,
    long MigrationsToThisSilo);

public sealed record StatusLayer(
    string Name,
    long Version,
    int DModel,
    int DFF,
    int TopK,
    long MicroBatches,
    string RouterSilo,
    StatusExpert[] Experts,
    string? Error);

public sealed record StatusExpert(int Index, string Silo, string Device, long TokensRouted, long TokensDropped, double ComputeMilliseconds);

/// <summary>Asks the catalog for the layers, each router for its stats and the cluster grain for the slots.</summary>
public sealed class StatusSnapshotSource(IGrainFactory grains, ILocalSiloDetails silo, LocalMetricTotals totals)
{
    public async Task<StatusSnapshot> TakeAsync()
    {
        var slots = grains.GetGrain<IMoeClusterGrain>(0).GetSlotUsage();
        var names = await grains.GetGrain<ILayerCatalogGrain>(0).List();
        var layers = await Task.WhenAll(names.Select(LayerAsync));
        return new StatusSnapshot(silo.SiloAddress.ToString(), DateTime.UtcNow, await slots, layers, totals.Recoveries, totals.Migrations);
    }

    private async Task<StatusLayer> LayerAsync(string name)
    {
        try
        {
            var s = await grains.GetGrain<IMoeRouterGrain>(name).GetStats();
            return new StatusLayer(name, s.Version, s.Spec.DModel, s.Spec.DFF, s.Spec.TopK, s.MicroBatches, s.Router.Silo,
                s.Experts.Select(e => new StatusExpert(e.Expert.Index, e.Expert.Placement.Silo, e.Expert.Placement.Device,
                    e.TokensRouted, e.TokensDropped, e.Expert.ComputeMilliseconds)).ToArray(), null);
        }
        catch (Exception e)
        {
            // One layer that cannot answer (its silo just died) must not blank the whole page.
            return new StatusLayer(name, 0, 0, 0, 0, 0, "", [], e.Message);
        }
    }
}
