namespace MoeCluster.Client.Rebalancing;

/// <summary>
/// Plans live moves of a layer's experts that lower the max/mean load across silos. An expert's
/// load is the tokens routed to it in a window (the difference of two stats snapshots, or since
/// the layer's start); a silo's load is its experts'. Greedy: while the most loaded silo is above
/// the target ratio, move the one expert from it to the least loaded silo with a free slot that
/// lowers the larger of the two loads the most; stop when no move helps.
/// </summary>
public static class RebalancePlanner
{
    public static RebalancePlan Plan(LayerStats now, SlotUsage[] slots, LayerStats? since = null, double targetRatio = 1.05, int maxMoves = 64)
    {
        ArgumentNullException.ThrowIfNull(now);
        ArgumentNullException.ThrowIfNull(slots);
        var before = since?.Experts.ToDictionary(e => e.Expert.Index, e => e.TokensRouted) ?? new Dictionary<int, long>();
        var expertLoad = now.Experts.ToDictionary(e => e.Expert.Index, e => (double)(e.TokensRouted - before.GetValueOrDefault(e.Expert.Index)));
        var home = now.Experts.ToDictionary(e => e.Expert.Index, e => e.Expert.Placement.Silo);
        // Every live silo counts, an empty one too (a silo that just joined is where load should go).
        var silos = slots.Select(s => s.Silo).Concat(home.Values).Distinct().Order().ToArray();
        var free = silos.ToDictionary(s => s, s => slots.Where(u => u.Silo == s).Sum(u => u.Capacity - u.Leased));
        var load = silos.ToDictionary(s => s, s => home.Where(h => h.Value == s).Sum(h => expertLoad[h.Key]));
        var loadBefore = new Dictionary<string, double>(load);
        var moves = new List<PlannedMove>();
        while (moves.Count < maxMoves && Ratio(load) > targetRatio)
        {
            var source = load.MaxBy(l => l.Value).Key;
            var target = load.Where(l => l.Key != source && free[l.Key] > 0).OrderBy(l => l.Value).ThenBy(l => l.Key).Select(l => l.Key).FirstOrDefault();
            if (target is null) break;
            var best = home.Where(h => h.Value == source && expertLoad[h.Key] > 0)
                .Select(h => (Expert: h.Key, Peak: Math.Max(load[source] - expertLoad[h.Key], load[target] + expertLoad[h.Key])))
                .Where(c => c.Peak < load[source])
                .OrderBy(c => c.Peak).ThenBy(c => c.Expert)
                .FirstOrDefault();
            if (best == default) break;
            var moved = expertLoad[best.Expert];
            moves.Add(new PlannedMove(best.Expert, source, target, moved));
            home[best.Expert] = target;
            load[source] -= moved;
            load[target] += moved;
            free[target]--;
            free[source]++;
        }
        return new RebalancePlan(now.Layer, loadBefore, load, Ratio(loadBefore), Ratio(load), moves.ToArray());
    }

    /// <summary>Max over mean of the silos' loads; 1 when nothing was routed.</summary>
    public static double Ratio(IReadOnlyDictionary<string, double> load)
    {
        var mean = load.Count == 0 ? 0 : load.Values.Average();
        return mean <= 0 ? 1.0 : load.Values.Max() / mean;
    }
}
