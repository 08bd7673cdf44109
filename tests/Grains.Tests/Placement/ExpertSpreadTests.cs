using MoeCluster.Grains.Experts;
using MoeCluster.Grains.Placement;
using Xunit;

namespace MoeCluster.Grains.Tests.Placement;

public class ExpertSpreadTests
{
    private static SlotUsage Silo(string name, int capacity, int leased) => new(name, "cpu", capacity, leased);

    private static Dictionary<int, string> Home(params (string Silo, int[] Ids)[] silos) =>
        silos.SelectMany(s => s.Ids.Select(id => (id, s.Silo))).ToDictionary(p => p.id, p => p.Silo);

    [Fact]
    public void A_joined_empty_silo_receives_experts_until_slot_use_is_even()
    {
        var moves = ExpertSpread.Plan([Silo("a", 8, 4), Silo("b", 8, 4), Silo("c", 8, 0)], Home(("a", [0, 2, 4, 6]), ("b", [1, 3, 5, 7])));
        // 4 + 4 + 0 → 3 + 3 + 2: the newest expert of the fuller silo each time.
        Assert.Equal(new[] { (6, "c"), (7, "c") }, moves);
    }

    [Fact]
    public void Even_slots_move_nothing_and_a_full_target_takes_nothing()
    {
        Assert.Empty(ExpertSpread.Plan([Silo("a", 8, 3), Silo("b", 8, 3), Silo("c", 8, 2)], Home(("a", [0, 1, 2]), ("b", [3, 4, 5]), ("c", [6, 7]))));
        Assert.Empty(ExpertSpread.Plan([Silo("a", 4, 4), Silo("b", 2, 2)], Home(("a", [0, 1, 2, 3]), ("b", [4, 5]))));
    }

    [Fact]
    public void Use_is_leases_over_capacity_and_counts_every_layer()
    {
        // Silo b is half full with another layer's experts; this layer's 4 experts on a (capacity 4)
        // move until a's use is no longer above b's after a move: 4/4, 2/8 → 3/4, 3/8 → 2/4, 4/8.
        var moves = ExpertSpread.Plan([Silo("a", 4, 4), Silo("b", 8, 2)], Home(("a", [0, 1, 2, 3])));
        Assert.Equal(new[] { (3, "b"), (2, "b") }, moves);
        // Only this layer's experts move: a silo full of other layers' experts gives none.
        Assert.Empty(ExpertSpread.Plan([Silo("a", 4, 4), Silo("b", 4, 0)], Home(("b", []))));
    }

    [Fact]
    public void Load_averages_are_seeded_by_the_first_step_then_weigh_the_newest_a_quarter()
    {
        var load = new LoadAverage();
        Assert.Equal(0, load.TokensPerStep);
        load.Add(100, TimeSpan.FromMilliseconds(8));
        load.Add(0, TimeSpan.FromMilliseconds(4));
        load.EndStep();
        Assert.Equal(100, load.TokensPerStep);
        Assert.Equal(12, load.ComputeMillisecondsPerStep, 6);
        load.Add(20, TimeSpan.FromMilliseconds(4));
        load.EndStep();
        Assert.Equal(80, load.TokensPerStep);
        Assert.Equal(10, load.ComputeMillisecondsPerStep, 6);
        load.EndStep(); // a step in which nothing was routed here
        Assert.Equal(60, load.TokensPerStep);
    }
}
