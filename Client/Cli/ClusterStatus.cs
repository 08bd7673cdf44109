using MoeCluster.Client;

namespace MoeCluster.Cli;

/// <summary>What <c>moe status</c> shows: every silo's device slots and load, every layer and its experts.</summary>
public sealed record ClusterStatus(SiloStatus[] Silos, LayerSummary[] Layers)
{
    public static async Task<ClusterStatus> ReadAsync(MoeClusterClient client)
    {
        var slots = await client.GetSlotUsageAsync();
        var layers = await Task.WhenAll((await client.ListLayersAsync()).Select(async name =>
            LayerSummary.From(await (await client.GetLayerAsync(name)).GetStatsAsync())));
        var experts = layers.SelectMany(l => l.Experts).ToArray();
        var silos = slots.GroupBy(s => s.Silo).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => new SiloStatus(
            SiloLabel.Short(g.Key),
            g.Select(s => new DeviceStatus(s.Device, s.Capacity, s.Leased)).ToArray(),
            experts.Count(e => e.Silo == SiloLabel.Short(g.Key)),
            experts.Where(e => e.Silo == SiloLabel.Short(g.Key)).Sum(e => e.TokensRouted))).ToArray();
        return new ClusterStatus(silos, layers);
    }
}

/// <param name="Experts">Experts of every layer hosted by the silo.</param>
/// <param name="TokensRouted">Tokens routed to those experts since they were activated: the silo's load.</param>
public sealed record SiloStatus(string Silo, DeviceStatus[] Devices, int Experts, long TokensRouted);

public sealed record DeviceStatus(string Device, int Slots, int Leased);

public sealed record LayerSummary(
    string Name, long Version, int NumExperts, int TopK, int DModel, int DFF, long MicroBatches,
    long TokensRouted, long TokensDropped, string RouterSilo, ExpertSummary[] Experts)
{
    public static LayerSummary From(LayerStats s) => new(
        s.Layer, s.Version, s.Spec.NumExperts, s.Spec.TopK, s.Spec.DModel, s.Spec.DFF, s.MicroBatches,
        s.TokensRouted, s.TokensDropped, SiloLabel.Short(s.Router.Silo),
        s.Experts.Select(e => new ExpertSummary(e.Expert.Index, SiloLabel.Short(e.Expert.Placement.Silo), e.Expert.Placement.Device,
            e.TokensRouted, e.TokensDropped, Math.Round(e.Expert.ComputeMilliseconds, 1), e.Expert.Version)).ToArray());
}

public sealed record ExpertSummary(int Index, string Silo, string Device, long TokensRouted, long TokensDropped, double ComputeMilliseconds, long Version);
