namespace MoeCluster;

/// <summary>
/// What the tokens of one micro-batch are, for the layer's specialization report: their token
/// ids, their classes, or both, one per row of x (an empty array: not given). The router counts,
/// per expert, the labels of the tokens it admitted; the labels change nothing else.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record TokenLabels([property: Id(0)] int[] TokenIds, [property: Id(1)] int[] Classes)
{
    /// <summary>The largest class id a report counts: classes index an array per expert.</summary>
    public const int MaxClasses = 65536;
}
