namespace MoeCluster.Client.Rebalancing;

/// <summary>What the rebalancer counts as an expert's load.</summary>
public enum RebalanceMeasure
{
    /// <summary>Tokens routed to the expert (rows it computed).</summary>
    Tokens,
    /// <summary>Milliseconds of forward and backward compute on the expert's device.</summary>
    ComputeTime,
}

/// <summary>One expert to move, and the load (in the plan's measure) it takes with it.</summary>
public sealed record PlannedMove(int Expert, string FromSilo, string ToSilo, double Load);

/// <summary>
/// A rebalancing plan for one layer: the load per silo before and after the moves, the max/mean
/// load ratio across silos before and after, the load per device before (keyed "silo device"),
/// and the moves in order. <see cref="Measure"/> and <see cref="Window"/> say what load means.
/// </summary>
public sealed record RebalancePlan(
    string Layer,
    IReadOnlyDictionary<string, double> LoadBefore,
    IReadOnlyDictionary<string, double> LoadAfter,
    double RatioBefore,
    double RatioAfter,
    PlannedMove[] Moves)
{
    public RebalanceMeasure Measure { get; init; } = RebalanceMeasure.Tokens;

    /// <summary>"moving average per step", "window between two stats snapshots", or "since the layer's start".</summary>
    public string Window { get; init; } = "";

    public IReadOnlyDictionary<string, double> DeviceLoadBefore { get; init; } = new Dictionary<string, double>();
}
