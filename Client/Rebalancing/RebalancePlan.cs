namespace MoeCluster.Client.Rebalancing;

/// <summary>One expert to move, and the load (tokens routed in the measured window) it takes with it.</summary>
public sealed record PlannedMove(int Expert, string FromSilo, string ToSilo, double Load);

/// <summary>
/// A rebalancing plan for one layer: the load per silo before and after the moves, the max/mean
/// load ratio across silos before and after, and the moves in order.
/// </summary>
public sealed record RebalancePlan(
    string Layer,
    IReadOnlyDictionary<string, double> LoadBefore,
    IReadOnlyDictionary<string, double> LoadAfter,
    double RatioBefore,
    double RatioAfter,
    PlannedMove[] Moves);
