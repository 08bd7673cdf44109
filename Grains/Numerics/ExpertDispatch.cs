using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Numerics;

/// <summary>
/// The router's side of the exchange with its experts, given a plan: which rows each expert gets,
/// how their outputs combine into y, and how ∂L/∂y splits into the experts' output gradients and
/// the gate gradients. All Float32; every returned tensor belongs to the caller.
/// </summary>
public static class ExpertDispatch
{
    /// <summary>x_e = x[tokens_e] for each expert (an empty [0, d] for an expert with no tokens).</summary>
    public static Tensor[] Gather(Tensor x, RoutingPlan plan)
    {
        var result = new Tensor[plan.NumExperts];
        for (int e = 0; e < plan.NumExperts; e++)
        {
            using var index = plan.Experts[e].TokenIndex(x.device);
            result[e] = x.index_select(0, index);
        }
        return result;
    }

    /// <summary>y_t = Σ over admitted (t, r) of g_{t,r} · FFN_e(x_t); rows no expert admitted stay 0.</summary>
    public static Tensor Combine(RoutingPlan plan, IReadOnlyList<Tensor?> outputs, int dModel, Device device)
    {
        using var scope = NewDisposeScope();
        var y = zeros(plan.Tokens, dModel, ScalarType.Float32, device);
        for (int e = 0; e < plan.NumExperts; e++)
        {
            var a = plan.Experts[e];
            if (a.Count == 0) continue;
            var output = outputs[e] ?? throw new ArgumentException($"expert {e} was sent {a.Count} tokens but returned no output");
            CheckRows(output, a.Count, dModel, $"output of expert {e}");
            y.index_add_(0, a.TokenIndex(device), output.to(ScalarType.Float32, device).mul(a.GateColumn(device)), HeldScalars.One);
        }
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>∂L/∂FFN_e(x_t) = g_{t,r} · ∂L/∂y_t, for each expert's rows.</summary>
    public static Tensor[] OutputGradients(RoutingPlan plan, Tensor dy)
    {
        var result = new Tensor[plan.NumExperts];
        for (int e = 0; e < plan.NumExperts; e++)
        {
            using var scope = NewDisposeScope();
            var a = plan.Experts[e];
            result[e] = dy.index_select(0, a.TokenIndex(dy.device)).to(ScalarType.Float32)
                .mul_(a.GateColumn(dy.device)).MoveToOuterDisposeScope();
        }
        return result;
    }

    /// <summary>∂L/∂g_{t,r} = ⟨∂L/∂y_t, FFN_e(x_t)⟩ as [T, k]; 0 where the assignment was dropped.</summary>
    public static Tensor GateGradients(RoutingPlan plan, Tensor dy, IReadOnlyList<Tensor?> outputs)
    {
        using var scope = NewDisposeScope();
        var flat = zeros(plan.Tokens * (long)plan.TopK, ScalarType.Float32, dy.device);
        for (int e = 0; e < plan.NumExperts; e++)
        {
            var a = plan.Experts[e];
            if (a.Count == 0) continue;
            var output = outputs[e] ?? throw new ArgumentException($"expert {e} has {a.Count} tokens but no saved output");
            var slots = new long[a.Count];
            for (int j = 0; j < a.Count; j++) slots[j] = a.Tokens[j] * plan.TopK + a.Ranks[j];
            var dots = dy.index_select(0, a.TokenIndex(dy.device)).to(ScalarType.Float32)
                .mul_(output.to(ScalarType.Float32, dy.device)).sum(1);
            flat.index_copy_(0, tensor(slots, device: dy.device), dots);
        }
        return flat.view(plan.Tokens, plan.TopK).MoveToOuterDisposeScope();
    }

    /// <summary>Σ_e scatter of the experts' ∂L/∂x_e back onto the token rows, as Float32 [T, d].</summary>
    public static Tensor ScatterInputGradients(RoutingPlan plan, IReadOnlyList<Tensor?> inputGrads, int dModel, Device device)
    {
        using var scope = NewDisposeScope();
        var dx = zeros(plan.Tokens, dModel, ScalarType.Float32, device);
        for (int e = 0; e < plan.NumExperts; e++)
        {
            var a = plan.Experts[e];
            if (a.Count == 0) continue;
            var grad = inputGrads[e] ?? throw new ArgumentException($"expert {e} was sent {a.Count} gradient rows but returned no ∂x");
            CheckRows(grad, a.Count, dModel, $"∂x of expert {e}");
            dx.index_add_(0, a.TokenIndex(device), grad.to(ScalarType.Float32, device), HeldScalars.One);
        }
        return dx.MoveToOuterDisposeScope();
    }

    private static void CheckRows(Tensor t, int rows, int dModel, string what)
    {
        if (t.dim() != 2 || t.shape[0] != rows || t.shape[1] != dModel)
            throw new ArgumentException($"{what} has shape {LayerInputChecks.Shape(t)}; expected [{rows}, {dModel}]");
    }
}
