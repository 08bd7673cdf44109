using TorchSharp;
using static TorchSharp.torch;
using TorchSharp.Modules;

namespace MoeCluster.Grains.Numerics;

/// <summary>
/// Steps 1–5 and 8 of the layer (DESIGN.md): jitter, gate logits, softmax, top-k, gate
/// normalisation, capacity and admission, the load-balancing and z-losses — and their backward,
/// written out by hand so the router keeps a few tensors per micro-batch instead of a graph.
/// The gate weight <c>W_g</c> is [d_model, E], Float32 always.
/// </summary>
public sealed class TopKRouter : IDisposable
{
    public TopKRouter(MoeLayerConfig config, long seed, Device? device = null)
    {
        Config = config.Validate();
        Device = device ?? CPU;
        GateWeight = InitGate(config, seed, Device);
    }

    /// <summary>A router over a gate it takes ownership of (a gate grown or shrunk with its experts).</summary>
    public TopKRouter(MoeLayerConfig config, Parameter gate)
    {
        Config = config.Validate();
        if (gate.ndim != 2 || gate.shape[0] != config.DModel || gate.shape[1] != config.NumExperts || gate.dtype != ScalarType.Float32)
            throw new ArgumentException($"gate is [{string.Join(", ", gate.shape)}] {gate.dtype}; expected [{config.DModel}, {config.NumExperts}] Float32");
        Device = gate.device;
        GateWeight = gate;
    }

    public MoeLayerConfig Config { get; }
    public Device Device { get; }

    /// <summary>W_g. A parameter so optimizers find it; <see cref="Backward"/> accumulates its grad.</summary>
    public Parameter GateWeight { get; }

    /// <summary>
    /// The gate weight for (config, seed): U(−1/√d, 1/√d), drawn in Float32 on the CPU. The
    /// reference layer builds its gate with this too, so both start from the same weights.
    /// </summary>
    public static Parameter InitGate(MoeLayerConfig config, long seed, Device? device = null)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator((ulong)seed);
        var bound = 1.0 / Math.Sqrt(config.DModel);
        var w = rand([config.DModel, config.NumExperts], ScalarType.Float32, generator: generator)
            .mul_(2 * bound).sub_(bound).to(device ?? CPU).contiguous();
        return new Parameter(w.DetachFromDisposeScope());
    }

    /// <summary>
    /// Routes a micro-batch. In training with ε &gt; 0 the router input is jittered with noise
    /// drawn from <paramref name="noiseSeed"/>, so a replay of the same batch routes identically.
    /// The result holds what <see cref="Backward"/> needs when <paramref name="train"/> is set.
    /// </summary>
    public RouterForward Forward(Tensor x, bool train, long noiseSeed = 0)
    {
        LayerInputChecks.Input(x, Config.DModel);
        int tokens = checked((int)x.shape[0]);
        int experts = Config.NumExperts, k = Config.TopK;
        int capacity = Config.Capacity(tokens, train);
        if (tokens == 0)
            return RouterForward.Empty(Config, capacity, train);

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var xr = x.to(ScalarType.Float32, Device);
        Tensor? noise = null;
        if (train && Config.JitterEpsilon > 0)
        {
            noise = JitterNoise(x.shape, Config.JitterEpsilon, noiseSeed, Device);
            xr = xr.mul(noise);
        }
        var logits = xr.matmul(GateWeight);
        var probs = nn.functional.softmax(logits, 1);
        var lse = logits.logsumexp(1);
        // A stable descending sort sends ties to the lower expert index (topk does not promise it).
        var (_, order) = probs.sort(1, descending: true, stable: true);
        var indices = order.narrow(1, 0, k).contiguous();
        var values = probs.gather(1, indices);
        var gates = Config.NormalizeGates ? values.div(values.sum(1, keepdim: true)) : values;

        var expertOf = indices.cpu().data<long>().ToArray();
        var gateOf = gates.cpu().data<float>().ToArray();
        var (plan, stats, admitted) = Admit(tokens, experts, k, capacity, expertOf, gateOf);

        using var tokenCount = tokens.ToScalar(); // held: see HeldScalars
        using var expertCount = experts.ToScalar();
        var rank0 = tensor(stats.Rank0, device: Device).to(ScalarType.Float32).div_(tokenCount);
        var loadBalancing = rank0.mul(probs.mean([0])).sum().mul_(expertCount).item<float>();
        var zLoss = lse.square().mean().item<float>();
        var aux = Config.AuxLossWeight * loadBalancing + Config.ZLossWeight * zLoss;

        if (!train)
            return new RouterForward(plan, stats, aux, loadBalancing, zLoss, null);
        var saved = new RouterForward.Saved(
            RouterInput: xr.DetachFromDisposeScope(),
            Noise: noise?.DetachFromDisposeScope(),
            Probs: probs.DetachFromDisposeScope(),
            LogSumExp: lse.DetachFromDisposeScope(),
            Indices: indices.DetachFromDisposeScope(),
            Values: values.DetachFromDisposeScope(),
            Gates: gates.DetachFromDisposeScope(),
            Admitted: tensor(admitted, device: Device).view(tokens, k).to(ScalarType.Float32).DetachFromDisposeScope(),
            Rank0Share: rank0.DetachFromDisposeScope());
        return new RouterForward(plan, stats, aux, loadBalancing, zLoss, saved);
    }

    /// <summary>
    /// Backpropagates through steps 1–5 and 8. <paramref name="gateGrads"/> is ∂L/∂g as [T, k]
    /// (row t, rank r: ⟨∂L/∂y_t, FFN_e(x_t)⟩ for admitted assignments; dropped ones are ignored);
    /// <paramref name="auxGrad"/> is s = ∂L/∂aux. Accumulates ∂L/∂W_g into the gate's grad and
    /// returns the router's share of ∂L/∂x as Float32 [T, d]. Consumes nothing: the caller disposes
    /// <paramref name="forward"/>.
    /// </summary>
    public Tensor Backward(RouterForward forward, Tensor gateGrads, double auxGrad = 1.0)
    {
        ArgumentNullException.ThrowIfNull(forward);
        var tokens = forward.Plan.Tokens;
        int k = Config.TopK;
        if (gateGrads.dim() != 2 || gateGrads.shape[0] != tokens || gateGrads.shape[1] != k)
            throw new ArgumentException($"gate gradients have shape {LayerInputChecks.Shape(gateGrads)}; expected [{tokens}, {k}]", nameof(gateGrads));
        if (!double.IsFinite(auxGrad))
            throw new ArgumentException($"∂L/∂aux is {auxGrad}; expected a finite number", nameof(auxGrad));
        if (tokens == 0)
            return zeros(0, Config.DModel, ScalarType.Float32, Device);
        var s = forward.SavedTensors ?? throw new InvalidOperationException(
            "this forward ran with train = false and saved nothing; backward needs a training forward");

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var g = gateGrads.to(ScalarType.Float32, Device).mul(s.Admitted);
        // ∂/∂v of g = v / Σv is (G − Σ_r G_r g_r) / Σv; without normalisation g = v.
        var dValues = Config.NormalizeGates
            ? g.sub(g.mul(s.Gates).sum(1, keepdim: true)).div_(s.Values.sum(1, keepdim: true))
            : g;
        var dProbs = zeros_like(s.Probs).scatter_(1, s.Indices, dValues);
        // L_aux = E Σ_e f_e P_e with P_e = mean_t p[t, e]: ∂/∂p[t, e] = E f_e / T.
        if (Config.AuxLossWeight != 0)
        {
            using var auxScale = (auxGrad * Config.AuxLossWeight * Config.NumExperts / tokens).ToScalar(); // held: see HeldScalars
            dProbs.add_(s.Rank0Share.mul(auxScale));
        }
        // Softmax backward, then L_z = mean_t lse_t²: ∂/∂logits[t, e] = 2 lse_t p[t, e] / T.
        var dLogits = s.Probs.mul(dProbs.sub(dProbs.mul(s.Probs).sum(1, keepdim: true)));
        if (Config.ZLossWeight != 0)
        {
            using var zScale = (auxGrad * Config.ZLossWeight * 2.0 / tokens).ToScalar();
            dLogits.add_(s.Probs.mul(s.LogSumExp.unsqueeze(1)).mul_(zScale));
        }

        AccumulateGateGrad(s.RouterInput.t().matmul(dLogits));
        var dx = dLogits.matmul(GateWeight.t());
        if (s.Noise is not null) dx = dx.mul_(s.Noise);
        return dx.MoveToOuterDisposeScope();
    }

    private void AccumulateGateGrad(Tensor grad)
    {
        using var existing = GateWeight.grad;
        if (existing is null) GateWeight.grad = grad.clone();
        else existing.add_(grad);
    }

    /// <summary>U(1−ε, 1+ε) of the given shape from its own seeded generator.</summary>
    public static Tensor JitterNoise(long[] shape, double epsilon, long seed, Device device)
    {
        using var generator = new Generator((ulong)seed);
        using var u = rand(shape, ScalarType.Float32, generator: generator);
        return u.mul(2 * epsilon).add_(1 - epsilon).to(device);
    }

    /// <summary>
    /// Admits assignments rank by rank (rank 0 of every token before rank 1 of any), tokens in
    /// index order or, batch-prioritised, by descending gate; an expert past its capacity drops
    /// the assignment.
    /// </summary>
    private (RoutingPlan, RoutingStats, bool[]) Admit(
        int tokens, int experts, int k, int capacity, long[] expertOf, float[] gateOf)
    {
        var load = new int[experts];
        var dropped = new long[experts];
        var rank0 = new long[experts];
        var admitted = new bool[tokens * k];
        var order = new int[tokens];
        for (int r = 0; r < k; r++)
        {
            for (int t = 0; t < tokens; t++) order[t] = t;
            if (Config.BatchPrioritized)
            {
                int rank = r;
                // Array.Sort is not stable, so the token index breaks ties explicitly.
                Array.Sort(order, (a, b) =>
                {
                    int c = gateOf[b * k + rank].CompareTo(gateOf[a * k + rank]);
                    return c != 0 ? c : a.CompareTo(b);
                });
            }
            foreach (var t in order)
            {
                var e = (int)expertOf[t * k + r];
                if (r == 0) rank0[e]++;
                if (load[e] < capacity) { load[e]++; admitted[t * k + r] = true; }
                else dropped[e]++;
            }
        }

        var tokenLists = new long[experts][];
        var rankLists = new int[experts][];
        var gateLists = new float[experts][];
        var fill = new int[experts];
        for (int e = 0; e < experts; e++)
        {
            tokenLists[e] = new long[load[e]];
            rankLists[e] = new int[load[e]];
            gateLists[e] = new float[load[e]];
        }
        for (int t = 0; t < tokens; t++)
        {
            for (int r = 0; r < k; r++)
            {
                if (!admitted[t * k + r]) continue;
                var e = (int)expertOf[t * k + r];
                var j = fill[e]++;
                tokenLists[e][j] = t;
                rankLists[e][j] = r;
                gateLists[e][j] = gateOf[t * k + r];
            }
        }
        var assignments = new ExpertAssignment[experts];
        var routed = new long[experts];
        for (int e = 0; e < experts; e++)
        {
            assignments[e] = new ExpertAssignment(tokenLists[e], rankLists[e], gateLists[e]);
            routed[e] = load[e];
        }
        var reportedCapacity = capacity == int.MaxValue ? 0 : capacity;
        return (new RoutingPlan(tokens, k, assignments),
                new RoutingStats(tokens, reportedCapacity, routed, dropped, rank0),
                admitted);
    }

    public void Dispose() => GateWeight.Dispose();
}
