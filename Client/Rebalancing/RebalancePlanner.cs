namespace MoeCluster.Client.Rebalancing;

/// <summary>
/// Plans live moves of a layer's experts that lower the max/mean load across silos. An expert's
/// load is, in the chosen <see cref="RebalanceMeasure"/> (tokens or compute time): with a
/// <c>since</c> snapshot, what it did between that snapshot and now; without one, its moving
/// average per step (<see cref="ExpertStats.TokensPerStep"/>,
/// <see cref="ExpertStats.ComputeMillisecondsPerStep"/>), or, before any step, its totals since the
/// layer's start. A silo's (and a device's) load is its experts'. Greedy: while the most loaded
/// silo is above the target ratio, move the one expert from it to the least loaded silo with a free
/// slot that lowers the larger of the two loads the most; stop when no move helps.
/// </summary>
public static class RebalancePlanner
{
    public static RebalancePlan Plan(LayerStats now, SlotUsage[] slots, LayerStats? since = null, double targetRatio = 1.05, int maxMoves = 64,
        RebalanceMeasure measure = RebalanceMeasure.Tokens)
    {
        ArgumentNullException.ThrowIfNull(now);
        ArgumentNullException.ThrowIfNull(slots);
        var (expertLoad, window) = ExpertLoads(now, since, measure);
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
        var deviceLoad = now.Experts.GroupBy(e => $"{e.Expert.Placement.Silo} {e.Expert.Placement.Device}")
            .OrderBy(g => g.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Sum(e => expertLoad[e.Expert.Index]));
        return new RebalancePlan(now.Layer, loadBefore, load, Ratio(loadBefore), Ratio(load), moves.ToArray())
        {
            Measure = measure,
            Window = window,
            DeviceLoadBefore = deviceLoad,
        };
    }

    /// <summary>Each expert's load in <paramref name="measure"/>, and which window it covers.</summary>
    public static (Dictionary<int, double> Load, string Window) ExpertLoads(LayerStats now, LayerStats? since, RebalanceMeasure measure)
    {
        double Total(ExpertLoad e) => measure == RebalanceMeasure.Tokens ? e.TokensRouted : e.Expert.ComputeMilliseconds;
        if (since is not null)
        {
            var before = since.Experts.ToDictionary(e => e.Expert.Index, Total);
            return (now.Experts.ToDictionary(e => e.Expert.Index, e => Total(e) - before.GetValueOrDefault(e.Expert.Index)), "window between two stats snapshots");
        }
        double Average(ExpertLoad e) => measure == RebalanceMeasure.Tokens ? e.Expert.TokensPerStep : e.Expert.ComputeMillisecondsPerStep;
        if (now.Experts.Any(e => Average(e) > 0))
            return (now.Experts.ToDictionary(e => e.Expert.Index, Average), "moving average per step");
        return (now.Experts.ToDictionary(e => e.Expert.Index, Total), "since the layer's start");
    }

    /// <summary>Max over mean of the silos' loads; 1 when nothing was routed.</summary>
    public static double Ratio(IReadOnlyDictionary<string, double> load)
    {
        var mean = load.Count == 0 ? 0 : load.Values.Average();
        return mean <= 0 ? 1.0 : load.Values.Max() / mean;
    }
}
