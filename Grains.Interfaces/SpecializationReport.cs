namespace MoeCluster;

/// <summary>A token id and how many of its tokens an expert admitted.</summary>
[GenerateSerializer, Immutable]
public sealed record TokenCount([property: Id(0)] int TokenId, [property: Id(1)] long Count);

/// <summary>What one expert received from the labelled micro-batches (see <see cref="TokenLabels"/>).</summary>
[GenerateSerializer, Immutable]
public sealed record ExpertSpecialization
{
    [Id(0)] public required int Index { get; init; }
    /// <summary>Labelled assignments the expert admitted.</summary>
    [Id(1)] public long Routed { get; init; }
    /// <summary>Labelled assignments to the expert dropped by its capacity.</summary>
    [Id(2)] public long Dropped { get; init; }
    /// <summary>Admitted assignments per class (index = class id); sums to <see cref="Routed"/> when every batch had classes.</summary>
    [Id(3)] public long[] ClassCounts { get; init; } = [];
    /// <summary>The token ids it admitted most, most first.</summary>
    [Id(4)] public TokenCount[] TopTokens { get; init; } = [];
    /// <summary>Entropy in bits of its class distribution: 0 when it sees one class only, log2(classes) when it sees all alike.</summary>
    [Id(5)] public double ClassEntropyBits { get; init; }
    /// <summary>Entropy in bits of its token-id distribution.</summary>
    [Id(6)] public double TokenEntropyBits { get; init; }

    /// <summary>Share of the assignments to it that capacity dropped.</summary>
    public double DropShare => Routed + Dropped == 0 ? 0 : (double)Dropped / (Routed + Dropped);
}

/// <summary>
/// Per expert of a layer, what it receives: the distribution of classes and token ids routed to
/// it, their entropy, its top tokens and its drop share, over the labelled micro-batches since
/// the layer was created (or the report was reset). Not checkpointed: it restarts with its router.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record SpecializationReport
{
    [Id(0)] public required string Layer { get; init; }
    /// <summary>The layer's version when the report was taken.</summary>
    [Id(1)] public long Version { get; init; }
    /// <summary>Labelled micro-batches counted.</summary>
    [Id(2)] public long Batches { get; init; }
    /// <summary>Tokens in those micro-batches.</summary>
    [Id(3)] public long Tokens { get; init; }
    /// <summary>Classes seen: 1 + the largest class id (0 when no batch had classes).</summary>
    [Id(4)] public int Classes { get; init; }
    [Id(5)] public required ExpertSpecialization[] Experts { get; init; }

    public long Routed => Experts.Sum(e => e.Routed);
    public long Dropped => Experts.Sum(e => e.Dropped);
}
