using TorchSharp;

namespace MoeCluster.Client;

/// <summary>
/// A forward sent as micro-batches in flight at once (<see cref="RemoteMoeLayer.ForwardMicroBatchesAsync"/>):
/// y of the whole batch, the batch ids and row counts of its micro-batches in row order, the mean
/// of their aux losses (each micro-batch routes with its own capacity, as GShard's groups do), and
/// their routing counts summed (<see cref="RoutingSummary.Capacity"/> is the sum of theirs).
/// Disposing frees y.
/// </summary>
public sealed record MicroBatchedForward(
    long[] BatchIds,
    long[] Rows,
    torch.Tensor Y,
    double AuxLoss,
    double LoadBalancingLoss,
    double ZLoss,
    RoutingSummary Routing) : IDisposable
{
    public void Dispose() => Y.Dispose();

    /// <summary>
    /// Consecutive row ranges of a batch of <paramref name="rows"/> rows cut into
    /// <paramref name="count"/> micro-batches whose sizes differ by at most one; never an empty
    /// one (a batch of fewer rows gets one per row, an empty batch one empty range).
    /// </summary>
    public static (long Start, long Rows)[] Slices(long rows, int count)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), count, $"micro-batches is {count}; expected at least 1");
        var n = (int)Math.Max(1, Math.Min(count, rows));
        var slices = new (long, long)[n];
        long start = 0;
        for (int i = 0; i < n; i++)
        {
            var size = rows / n + (i < rows % n ? 1 : 0);
            slices[i] = (start, size);
            start += size;
        }
        return slices;
    }

    /// <summary>The routing counts of several micro-batches as one: tokens, capacities, routed and dropped summed.</summary>
    public static RoutingSummary Merge(IReadOnlyList<RoutingSummary> parts)
    {
        var experts = parts.Max(p => Math.Max(p.Routed.Length, p.Dropped.Length));
        var routed = new long[experts];
        var dropped = new long[experts];
        foreach (var p in parts)
        {
            for (int e = 0; e < p.Routed.Length; e++) routed[e] += p.Routed[e];
            for (int e = 0; e < p.Dropped.Length; e++) dropped[e] += p.Dropped[e];
        }
        return new RoutingSummary(parts.Sum(p => p.Tokens), parts.Sum(p => p.Capacity), routed, dropped);
    }
}
