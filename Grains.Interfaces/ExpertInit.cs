namespace MoeCluster;

/// <summary>
/// How an expert added to a running layer starts: fresh (its weights drawn from seed, layer and
/// its id, as the layer's first experts were; a fresh gate column; fresh optimizer state), or as
/// a split of a live expert (a copy of its weights and optimizer state, and of its gate column
/// with that column's optimizer moments).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ExpertInit
{
    /// <summary>The id of the expert to copy; null for a fresh expert.</summary>
    [Id(0)] public int? SplitOf { get; init; }

    public static ExpertInit Fresh { get; } = new();

    public static ExpertInit Split(int parentId) => new() { SplitOf = parentId };

    public override string ToString() => SplitOf is { } parent ? $"split of expert {parent}" : "fresh";
}
