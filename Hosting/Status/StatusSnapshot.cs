using MoeCluster.Hosting.Telemetry;

namespace MoeCluster.Hosting.Status;

/// <summary>What the MoE status page shows, as <c>/api/moe</c> serves it: slots, layers, experts and this silo's counters.</summary>
public sealed record StatusSnapshot(
    string Silo,
    DateTime Time,
    SlotUsage[] Slots,
    StatusLayer[] Layers,
    long RecoveriesOnThisSilo,
    long MigrationsToThisSilo,
    long Recoveries,
    long Migrations,
    SiloMetricTotals[] SiloTotals);

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

/// <summary>
/// Asks the catalog for the layers, each router for its stats, the cluster grain for the slots, and
/// every active silo for its recovery and migration totals (<see cref="IMetricTotalsService"/>):
/// the cluster-wide counts are the sum over the silos alive now.
/// </summary>
public sealed class StatusSnapshotSource(IGrainFactory grains, ILocalSiloDetails silo, LocalMetricTotals totals, IMetricTotalsClient siloTotals)
{
    public async Task<StatusSnapshot> TakeAsync()
    {
        var slots = grains.GetGrain<IMoeClusterGrain>(0).GetSlotUsage();
        var perSilo = SiloTotalsAsync();
        var names = await grains.GetGrain<ILayerCatalogGrain>(0).List();
        var layers = await Task.WhenAll(names.Select(LayerAsync));
        var counted = await perSilo;
        return new StatusSnapshot(silo.SiloAddress.ToString(), DateTime.UtcNow, await slots, layers, totals.Recoveries, totals.Migrations,
            counted.Sum(t => t.Recoveries), counted.Sum(t => t.Migrations), counted);
    }

    private async Task<SiloMetricTotals[]> SiloTotalsAsync()
    {
        var hosts = await grains.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true);
        var answers = await Task.WhenAll(hosts.Keys.Select(async address =>
        {
            try
            {
                return await siloTotals.On(address).GetTotals().WaitAsync(TimeSpan.FromSeconds(5));
            }
            catch (Exception)
            {
                // A silo that is going away must not blank the page; it is left out of the sums.
                return null;
            }
        }));
        return answers.OfType<SiloMetricTotals>().OrderBy(t => t.Silo, StringComparer.Ordinal).ToArray();
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
