using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Numerics;

/// <summary>
/// What the router decided for one micro-batch (plan, stats, losses) and, for a training
/// forward, the tensors its backward needs. Dispose it once the backward has run.
/// </summary>
public sealed class RouterForward : IDisposable
{
    internal sealed record Saved(
        Tensor RouterInput, Tensor? Noise, Tensor Probs, Tensor LogSumExp, Tensor Indices,
        Tensor Values, Tensor Gates, Tensor Admitted, Tensor Rank0Share) : IDisposable
    {
        public void Dispose()
        {
            RouterInput.Dispose(); Noise?.Dispose(); Probs.Dispose(); LogSumExp.Dispose();
            Indices.Dispose(); Values.Dispose(); Gates.Dispose(); Admitted.Dispose(); Rank0Share.Dispose();
        }
    }

    internal RouterForward(RoutingPlan plan, RoutingStats stats, double aux, double loadBalancing, double zLoss, Saved? saved)
    {
        Plan = plan;
        Stats = stats;
        AuxLoss = aux;
        LoadBalancingLoss = loadBalancing;
        ZLoss = zLoss;
        SavedTensors = saved;
        IsTraining = saved is not null;
    }

    internal static RouterForward Empty(MoeLayerConfig config, int capacity, bool train)
    {
        var experts = config.NumExperts;
        var none = Enumerable.Range(0, experts).Select(_ => new ExpertAssignment([], [], [])).ToArray();
        var stats = new RoutingStats(0, capacity == int.MaxValue ? 0 : capacity, new long[experts], new long[experts], new long[experts]);
        return new RouterForward(new RoutingPlan(0, config.TopK, none), stats, 0, 0, 0, null) { IsTraining = train };
    }

    public RoutingPlan Plan { get; }
    public RoutingStats Stats { get; }
    /// <summary>α·L_aux + β·L_z: the value the layer adds to the loss.</summary>
    public double AuxLoss { get; }
    /// <summary>L_aux = E Σ_e f_e P_e, unweighted (0 for an empty batch).</summary>
    public double LoadBalancingLoss { get; }
    /// <summary>L_z = mean_t logsumexp(logits_t)², unweighted (0 for an empty batch).</summary>
    public double ZLoss { get; }

    public bool IsTraining { get; private init; }
    internal Saved? SavedTensors { get; private set; }

    public void Dispose()
    {
        SavedTensors?.Dispose();
        SavedTensors = null;
    }
}
