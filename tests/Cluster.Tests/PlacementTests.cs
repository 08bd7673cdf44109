using Xunit;

namespace MoeCluster.Cluster.Tests;

public class PlacementTests
{
    [Fact]
    public async Task Eight_experts_on_two_silos_of_four_slots_land_four_per_silo_and_a_ninth_is_refused()
    {
        await using var cluster = await MoeTestCluster.StartAsync(silos: 2, expertsPerDevice: 4);
        var spec = new LayerSpec { DModel = 8, DFF = 16, NumExperts = 8, TopK = 2 };
        var layer = await cluster.Client.CreateLayerAsync("placed", spec);

        var stats = await layer.GetStatsAsync();
        var perSilo = stats.Experts.GroupBy(e => e.Expert.Placement.Silo).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(2, perSilo.Count);
        Assert.All(perSilo.Values, count => Assert.Equal(4, count));
        Assert.All(stats.Experts, e => Assert.Equal("cpu", e.Expert.Placement.Device));
        var usage = await cluster.Client.GetSlotUsageAsync();
        Assert.All(usage, u => Assert.Equal((4, 4), (u.Capacity, u.Leased)));

        var error = await Assert.ThrowsAsync<DeviceCapacityException>(() =>
            cluster.Client.CreateLayerAsync("one-too-many", spec with { NumExperts = 1, TopK = 1 }));
        Assert.StartsWith("layer \"one-too-many\" with 1 experts needs 1 free device slots but only 0 are free: the cluster's 2 live silo(s) offer 8 expert slot(s) in all [", error.Message);
        Assert.EndsWith("; add a silo, raise --experts-per-device, or start silos with --overcommit", error.Message);
    }

    [Fact]
    public async Task Overcommit_places_experts_beyond_the_slots()
    {
        await using var cluster = await MoeTestCluster.StartAsync(silos: 1, expertsPerDevice: 2, overcommit: true);
        var layer = await cluster.Client.CreateLayerAsync("crowded", new LayerSpec { DModel = 4, DFF = 4, NumExperts = 5, TopK = 1 });
        var stats = await layer.GetStatsAsync();
        Assert.Equal(5, stats.Experts.Length);
        Assert.Single(stats.Experts.Select(e => e.Expert.Placement.Silo).Distinct());
    }
}
