using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Numerics;

/// <summary>The admitted assignments of one expert, in ascending token order.</summary>
public sealed record ExpertAssignment(long[] Tokens, int[] Ranks, float[] Gates)
{
    public int Count => Tokens.Length;

    /// <summary>The token indices as an Int64 tensor (caller disposes).</summary>
    public Tensor TokenIndex(Device? device = null) => tensor(Tokens, device: device);

    /// <summary>The gates as a Float32 column [n, 1] (caller disposes).</summary>
    public Tensor GateColumn(Device? device = null) => tensor(Gates, device: device).unsqueeze(1);
}

/// <summary>
/// Which tokens go to which expert with which gate: the router's decision for one micro-batch,
/// after capacity. It is all the experts' side needs; it carries no tensors of its own.
/// </summary>
public sealed record RoutingPlan(int Tokens, int TopK, ExpertAssignment[] Experts)
{
    public int NumExperts => Experts.Length;
}

/// <summary>Counts for one micro-batch. Routed and dropped are per expert; Rank0 is before capacity.</summary>
public sealed record RoutingStats(int Tokens, int Capacity, long[] Routed, long[] Dropped, long[] Rank0)
{
    public long TotalDropped => Dropped.Sum();
    public long TotalRouted => Routed.Sum();
}
