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

    /// <summary>Refuses arrays that are null or neither empty nor one per token of a batch of <paramref name="rows"/>.</summary>
    public void CheckCounts(long rows)
    {
        foreach (var (values, what) in new[] { (TokenIds, "token ids"), (Classes, "classes") })
        {
            if (values is null) throw new ArgumentException($"{what} is null; expected an array (empty when not given)");
            if (values.Length != 0 && values.Length != rows)
                throw new ArgumentException($"{what} has {values.Length} label(s); expected one per token ({rows}) or none");
        }
    }
}
