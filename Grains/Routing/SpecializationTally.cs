using MoeCluster.Grains.Numerics;

namespace MoeCluster.Grains.Routing;

/// <summary>
/// The router's running count, per expert, of the labels of the tokens it admitted: the data of
/// a <see cref="SpecializationReport"/>. Called on the grain's turn only, so it needs no lock.
/// </summary>
public sealed class SpecializationTally(int numExperts)
{
    private const int TopTokens = 5;

    private readonly long[] routed = new long[numExperts];
    private readonly long[] dropped = new long[numExperts];
    private readonly List<long>[] classCounts = Enumerable.Range(0, numExperts).Select(_ => new List<long>()).ToArray();
    private readonly Dictionary<int, long>[] tokenCounts = Enumerable.Range(0, numExperts).Select(_ => new Dictionary<int, long>()).ToArray();
    private long batches, tokens;
    private int classes;

    /// <summary>Throws an <see cref="ArgumentException"/> when the labels do not fit a micro-batch of <paramref name="rows"/> tokens.</summary>
    public static void Check(TokenLabels labels, long rows)
    {
        labels.CheckCounts(rows);
        void CheckOne(int[] values, string what, int limit)
        {
            foreach (var v in values)
                if (v < 0 || v >= limit) throw new ArgumentException($"{what} has label {v}; expected 0 ≤ label < {limit}");
        }
        CheckOne(labels.TokenIds, "token ids", int.MaxValue);
        CheckOne(labels.Classes, "classes", TokenLabels.MaxClasses);
    }

    public void Add(RoutingPlan plan, RoutingStats stats, TokenLabels labels)
    {
        batches++;
        tokens += plan.Tokens;
        for (int e = 0; e < plan.NumExperts; e++)
        {
            var assigned = plan.Experts[e];
            routed[e] += assigned.Count;
            dropped[e] += stats.Dropped[e];
            foreach (var t in assigned.Tokens)
            {
                if (labels.Classes.Length > 0)
                {
                    var c = labels.Classes[t];
                    var counts = classCounts[e];
                    while (counts.Count <= c) counts.Add(0);
                    counts[c]++;
                    classes = Math.Max(classes, c + 1);
                }
                if (labels.TokenIds.Length > 0)
                    tokenCounts[e][labels.TokenIds[t]] = tokenCounts[e].GetValueOrDefault(labels.TokenIds[t]) + 1;
            }
        }
    }

    public SpecializationReport Report(string layer, long version) => new()
    {
        Layer = layer,
        Version = version,
        Batches = batches,
        Tokens = tokens,
        Classes = classes,
        Experts = Enumerable.Range(0, routed.Length).Select(e =>
        {
            var perClass = Enumerable.Range(0, classes).Select(c => c < classCounts[e].Count ? classCounts[e][c] : 0).ToArray();
            return new ExpertSpecialization
            {
                Index = e,
                Routed = routed[e],
                Dropped = dropped[e],
                ClassCounts = perClass,
                TopTokens = tokenCounts[e].OrderByDescending(p => p.Value).ThenBy(p => p.Key).Take(TopTokens)
                    .Select(p => new TokenCount(p.Key, p.Value)).ToArray(),
                ClassEntropyBits = EntropyBits(perClass),
                TokenEntropyBits = EntropyBits(tokenCounts[e].Values),
            };
        }).ToArray(),
    };

    private static double EntropyBits(IEnumerable<long> counts)
    {
        var list = counts.Where(c => c > 0).ToList();
        double total = list.Sum();
        return total == 0 ? 0 : 0.0 - list.Sum(c => c / total * Math.Log2(c / total)); // 0.0 − x, so one class reads 0, not −0
    }
}
