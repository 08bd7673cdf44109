namespace MoeCluster.Grains.Placement;

/// <summary>
/// Which of one layer's experts to move so that the cluster's device slots are evenly used (a silo
/// joined, or the layer was created before every silo's slots were known). A silo's use is its
/// leased slots (every layer's) over its capacity. Greedy: move one of the layer's experts from
/// the most used silo that holds one to the least used silo with a free slot, while the target
/// stays below the source's use after the move; each move lowers Σ use², so it ends.
/// </summary>
public static class ExpertSpread
{
    /// <param name="usage">Every live silo's device slots and leases (all layers).</param>
    /// <param name="home">The layer's experts by id, and the silo each is on.</param>
    /// <returns>The moves in order: expert id and target silo.</returns>
    public static (int Expert, string ToSilo)[] Plan(IEnumerable<SlotUsage> usage, IReadOnlyDictionary<int, string> home)
    {
        var capacity = new Dictionary<string, int>();
        var leased = new Dictionary<string, int>();
        foreach (var u in usage)
        {
            capacity[u.Silo] = capacity.GetValueOrDefault(u.Silo) + u.Capacity;
            leased[u.Silo] = leased.GetValueOrDefault(u.Silo) + u.Leased;
        }
        var at = new Dictionary<int, string>(home);
        var moves = new List<(int, string)>();
        double Use(string s, int extra = 0) => (double)(leased[s] + extra) / capacity[s];
        while (moves.Count < home.Count)
        {
            var target = capacity.Keys.Where(s => capacity[s] > 0 && leased[s] < capacity[s])
                .OrderBy(s => Use(s)).ThenBy(s => s, StringComparer.Ordinal).FirstOrDefault();
            if (target is null) break;
            var source = at.Values.Where(s => s != target && capacity.GetValueOrDefault(s) > 0).Distinct()
                .OrderByDescending(s => Use(s)).ThenBy(s => s, StringComparer.Ordinal).FirstOrDefault();
            if (source is null || Use(source) <= Use(target, 1)) break;
            // The newest expert of the source moves: ids are never reused, so the choice is stable.
            var expert = at.Where(h => h.Value == source).Max(h => h.Key);
            moves.Add((expert, target));
            at[expert] = target;
            leased[source]--;
            leased[target]++;
        }
        return moves.ToArray();
    }
}
