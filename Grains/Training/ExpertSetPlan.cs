namespace MoeCluster.Grains.Training;

/// <summary>
/// What adding or removing experts does to a layer: the expert ids after the change (gate-column
/// order), where each new gate column comes from (an old column, or −1 for a fresh one), which
/// ids come and go, and the next free id. Ids are never reused, so a live expert keeps its id,
/// its grain and its checkpoints whatever else changes. The router and the reference trainer
/// plan with the same code.
/// </summary>
public sealed record ExpertSetPlan(int[] Ids, int[] Sources, int[] Added, int[] Removed, int? Parent, int NextId)
{
    /// <summary>A layer may not grow past this many experts in one change.</summary>
    public const int MaxAddedAtOnce = 1024;

    public static ExpertSetPlan Add(int[] ids, int nextId, int count, ExpertInit init, string layer)
    {
        ArgumentNullException.ThrowIfNull(init);
        if (count < 1 || count > MaxAddedAtOnce)
            throw new ArgumentException($"cannot add {count} expert(s) to layer \"{layer}\"; expected 1 to {MaxAddedAtOnce}");
        int? parentColumn = null;
        if (init.SplitOf is { } parent)
        {
            parentColumn = Array.IndexOf(ids, parent);
            if (parentColumn < 0)
                throw new ArgumentException($"expert {parent} cannot be split: layer \"{layer}\" has experts {Describe(ids)}");
        }
        var added = Enumerable.Range(nextId, count).ToArray();
        var sources = Enumerable.Range(0, ids.Length).Concat(added.Select(_ => parentColumn ?? -1)).ToArray();
        return new ExpertSetPlan([.. ids, .. added], sources, added, [], init.SplitOf, nextId + count);
    }

    public static ExpertSetPlan Remove(int[] ids, int nextId, int[] removed, string layer)
    {
        ArgumentNullException.ThrowIfNull(removed);
        if (removed.Length == 0)
            throw new ArgumentException($"no expert ids given to remove from layer \"{layer}\"; expected one or more of {Describe(ids)}");
        var gone = removed.ToHashSet();
        if (gone.Count != removed.Length)
            throw new ArgumentException($"expert ids to remove from layer \"{layer}\" repeat: [{string.Join(", ", removed)}]");
        var unknown = removed.Where(id => !ids.Contains(id)).ToArray();
        if (unknown.Length > 0)
            throw new ArgumentException($"expert(s) {string.Join(", ", unknown)} cannot be removed: layer \"{layer}\" has experts {Describe(ids)}");
        var kept = Enumerable.Range(0, ids.Length).Where(j => !gone.Contains(ids[j])).ToArray();
        return new ExpertSetPlan(kept.Select(j => ids[j]).ToArray(), kept, [], removed.Order().ToArray(), null, nextId);
    }

    /// <summary>Ids as people read them: "0..7" when they are a run, else a list.</summary>
    public static string Describe(IReadOnlyList<int> ids)
    {
        if (ids.Count == 0) return "none";
        var run = ids.Select((id, j) => id == ids[0] + j).All(x => x);
        return run && ids.Count >= 2 ? $"{ids[0]}..{ids[^1]}" : string.Join(", ", ids.Take(32)) + (ids.Count > 32 ? $", … ({ids.Count})" : "");
    }
}
