using MoeCluster.Grains.Numerics;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Tests.Numerics;

/// <summary>Cases small enough to check by hand: W_g is the identity, so the logits are x itself.</summary>
public class TopKRouterGoldenTests
{
    private static TopKRouter IdentityRouter(MoeLayerConfig config)
    {
        var router = new TopKRouter(config, seed: 1);
        using var noGrad = no_grad();
        using var eye = torch.eye(config.DModel, config.NumExperts);
        router.GateWeight.copy_(eye);
        return router;
    }

    private static Tensor Rows(params float[][] rows) =>
        tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length]);

    private static (long Token, int Rank, float Gate)[] Assigned(RoutingPlan plan, int expert) =>
        plan.Experts[expert].Tokens.Select((t, j) => (t, plan.Experts[expert].Ranks[j], plan.Experts[expert].Gates[j])).ToArray();

    [Theory]
    [InlineData(10, 2, 8, 1.25, 4, 4)]   // ceil(3.125) = 4, min 4
    [InlineData(10, 2, 8, 0.5, 4, 4)]    // ceil(1.25) = 2 < min 4
    [InlineData(10, 2, 8, 0.5, 0, 2)]
    [InlineData(7, 1, 2, 1.0, 0, 4)]     // ceil(3.5)
    [InlineData(7, 1, 2, 0.0, 0, int.MaxValue)] // dropless
    public void Capacity_follows_the_formula(int tokens, int k, int experts, double cf, int minCapacity, int expected)
    {
        var config = new MoeLayerConfig { DModel = 4, DFF = 4, NumExperts = experts, TopK = k, CapacityFactor = cf, MinCapacity = minCapacity };
        Assert.Equal(expected, config.Capacity(tokens, train: true));
    }

    [Fact]
    public void Top1_drops_the_later_tokens_of_a_full_expert()
    {
        var config = new MoeLayerConfig { DModel = 2, DFF = 4, NumExperts = 2, TopK = 1, CapacityFactor = 1.0, MinCapacity = 0 };
        using var router = IdentityRouter(config);
        // Tokens 0, 1, 2 prefer expert 0; token 3 expert 1. C = ceil(1 · 4 · 1 / 2) = 2.
        using var x = Rows([1, 0], [3, 0], [2, 0], [0, 1]);
        using var r = router.Forward(x, train: true);
        Assert.Equal(2, r.Stats.Capacity);
        Assert.Equal(new long[] { 0, 1 }, r.Plan.Experts[0].Tokens);
        Assert.Equal(new long[] { 3 }, r.Plan.Experts[1].Tokens);
        Assert.Equal(new long[] { 2, 1 }, r.Stats.Routed);
        Assert.Equal(new long[] { 1, 0 }, r.Stats.Dropped);
        Assert.Equal(new long[] { 3, 1 }, r.Stats.Rank0);
        // Switch (k = 1): the gate is the probability itself, not renormalised.
        Assert.Equal(1 / (1 + Math.Exp(-1)), r.Plan.Experts[0].Gates[0], 6);
        Assert.Equal(1 / (1 + Math.Exp(-3)), r.Plan.Experts[0].Gates[1], 6);
    }

    [Fact]
    public void Batch_prioritised_admission_keeps_the_highest_gates()
    {
        var config = new MoeLayerConfig { DModel = 2, DFF = 4, NumExperts = 2, TopK = 1, CapacityFactor = 1.0, MinCapacity = 0, BatchPrioritized = true };
        using var router = IdentityRouter(config);
        using var x = Rows([1, 0], [3, 0], [2, 0], [0, 1]);
        using var r = router.Forward(x, train: true);
        Assert.Equal(new long[] { 1, 2 }, r.Plan.Experts[0].Tokens); // token 0 has the lowest gate
        Assert.Equal(new long[] { 1, 0 }, r.Stats.Dropped);
    }

    [Fact]
    public void Top2_admits_rank_by_rank_and_keeps_the_normalised_gate_of_a_survivor()
    {
        var config = new MoeLayerConfig { DModel = 3, DFF = 4, NumExperts = 3, TopK = 2, CapacityFactor = 0.5, MinCapacity = 0 };
        using var router = IdentityRouter(config);
        // Ranks: t0 → (e0, e1), t1 → (e1, e0), t2 → (e0, e2). C = ceil(0.5 · 3 · 2 / 3) = 1.
        // Rank 0 first: t0→e0 in, t1→e1 in, t2→e0 out; then rank 1: t0→e1 out, t1→e0 out, t2→e2 in.
        // (Token-major order would have let t0's rank 1 take e1 before t1's rank 0.)
        using var x = Rows([3, 2, 0], [2, 3, 0], [3, 0, 2]);
        using var r = router.Forward(x, train: true);
        Assert.Equal(1, r.Stats.Capacity);
        var sigmoid1 = 1 / (1 + Math.Exp(-1)); // e³ / (e³ + e²): the normalised top-1 gate of t0
        var e0 = Assigned(r.Plan, 0);
        Assert.Equal((0L, 0), (e0.Single().Token, e0.Single().Rank));
        Assert.Equal(sigmoid1, e0.Single().Gate, 6); // its rank-1 partner was dropped; no renormalisation
        Assert.Equal((1L, 0), (Assigned(r.Plan, 1).Single().Token, Assigned(r.Plan, 1).Single().Rank));
        var e2 = Assigned(r.Plan, 2).Single();
        Assert.Equal((2L, 1), (e2.Token, e2.Rank));
        Assert.Equal(1 - sigmoid1, e2.Gate, 6);
        Assert.Equal(new long[] { 2, 1, 0 }, r.Stats.Dropped);
        Assert.Equal(new long[] { 1, 1, 1 }, r.Stats.Routed);
    }

    [Fact]
    public void Without_normalisation_a_top2_gate_is_the_probability()
    {
        var config = new MoeLayerConfig { DModel = 3, DFF = 4, NumExperts = 3, TopK = 2, CapacityFactor = 0, Normalize = false };
        using var router = IdentityRouter(config);
        using var x = Rows([3, 2, 0]);
        using var r = router.Forward(x, train: true);
        var z = Math.Exp(3) + Math.Exp(2) + 1;
        Assert.Equal(Math.Exp(3) / z, Assigned(r.Plan, 0).Single().Gate, 6);
        Assert.Equal(Math.Exp(2) / z, Assigned(r.Plan, 1).Single().Gate, 6);
        Assert.Empty(r.Plan.Experts[2].Tokens);
    }

    [Fact]
    public void Ties_go_to_the_lower_expert_index()
    {
        var config = new MoeLayerConfig { DModel = 4, DFF = 4, NumExperts = 4, TopK = 2, CapacityFactor = 0 };
        using var router = IdentityRouter(config);
        // Row 0: all equal → experts 0, 1. Row 1: 1, 1, 0, 1 → experts 0, 1 (not 3).
        // Row 2: 0, 2, 2, 2 → experts 1, 2.
        using var x = Rows([0, 0, 0, 0], [1, 1, 0, 1], [0, 2, 2, 2]);
        using var r = router.Forward(x, train: true);
        Assert.Equal(new long[] { 0, 1 }, r.Plan.Experts[0].Tokens);
        Assert.Equal(new long[] { 0, 1, 2 }, r.Plan.Experts[1].Tokens);
        Assert.Equal(new long[] { 2 }, r.Plan.Experts[2].Tokens);
        Assert.Empty(r.Plan.Experts[3].Tokens);
        Assert.All(r.Plan.Experts[0].Gates.Concat(r.Plan.Experts[1].Gates), g => Assert.Equal(0.5f, g, 6));
    }

    [Fact]
    public void Aux_and_z_losses_match_their_formulas()
    {
        var config = new MoeLayerConfig { DModel = 3, DFF = 4, NumExperts = 3, TopK = 2, CapacityFactor = 0.5, MinCapacity = 0, AuxLossWeight = 0.01, ZLossWeight = 0.001 };
        using var router = IdentityRouter(config);
        double[][] rows = [[3, 2, 0], [2, 3, 0], [3, 0, 2]];
        using var x = Rows(rows.Select(r => r.Select(v => (float)v).ToArray()).ToArray());
        using var r = router.Forward(x, train: true);

        // By hand: p = softmax per row; f = rank-0 shares before capacity (e0: t0, t2; e1: t1).
        var p = rows.Select(row => { var z = row.Sum(Math.Exp); return row.Select(v => Math.Exp(v) / z).ToArray(); }).ToArray();
        double[] f = [2.0 / 3, 1.0 / 3, 0];
        var laux = 3 * Enumerable.Range(0, 3).Sum(e => f[e] * p.Average(row => row[e]));
        var lz = rows.Average(row => Math.Pow(Math.Log(row.Sum(Math.Exp)), 2));
        Assert.Equal(laux, r.LoadBalancingLoss, 6);
        Assert.Equal(lz, r.ZLoss, 5); // lz ≈ 11.4: 1e-6 relative
        Assert.True(Math.Abs(lz - r.ZLoss) <= 1e-6 * lz);
        Assert.True(Math.Abs(0.01 * laux + 0.001 * lz - r.AuxLoss) <= 1e-6);
    }

    [Fact]
    public void Balanced_routing_gives_an_aux_loss_of_one()
    {
        // Uniform probabilities and an even rank-0 split: E · Σ (1/E)(1/E) = 1.
        var config = new MoeLayerConfig { DModel = 2, DFF = 4, NumExperts = 2, TopK = 1, CapacityFactor = 0 };
        using var router = new TopKRouter(config, seed: 3);
        using (no_grad()) router.GateWeight.zero_();
        using var x = Rows([1, 2], [3, 4]);
        using var r = router.Forward(x, train: true);
        // All tokens tie and go to expert 0: f = (1, 0), P = (½, ½) → L_aux = 2 · ½ = 1; lse = ln 2.
        Assert.Equal(1.0, r.LoadBalancingLoss, 6);
        Assert.Equal(Math.Log(2) * Math.Log(2), r.ZLoss, 6);
    }

    [Fact]
    public void Jitter_is_reproducible_from_its_seed_and_off_in_inference()
    {
        var config = new MoeLayerConfig { DModel = 8, DFF = 4, NumExperts = 4, TopK = 1, CapacityFactor = 0, JitterEpsilon = 0.5 };
        using var router = new TopKRouter(config, seed: 5);
        using var generator = new Generator(9);
        using var x = torch.randn(64, 8, generator: generator);
        using var a = router.Forward(x, train: true, noiseSeed: 11);
        using var b = router.Forward(x, train: true, noiseSeed: 11);
        using var c = router.Forward(x, train: true, noiseSeed: 12);
        using var eval1 = router.Forward(x, train: false, noiseSeed: 11);
        using var eval2 = router.Forward(x, train: false, noiseSeed: 12);
        Assert.Equal(a.Plan.Experts.SelectMany(e => e.Gates), b.Plan.Experts.SelectMany(e => e.Gates));
        Assert.NotEqual(a.Plan.Experts.SelectMany(e => e.Gates), c.Plan.Experts.SelectMany(e => e.Gates));
        Assert.Equal(eval1.Plan.Experts.SelectMany(e => e.Gates), eval2.Plan.Experts.SelectMany(e => e.Gates));
    }

    [Fact]
    public void Empty_batch_routes_nothing()
    {
        var config = new MoeLayerConfig { DModel = 4, DFF = 4, NumExperts = 3, TopK = 2 };
        using var router = new TopKRouter(config, seed: 1);
        using var x = zeros(0, 4);
        using var r = router.Forward(x, train: true);
        Assert.All(r.Plan.Experts, e => Assert.Empty(e.Tokens));
        Assert.Equal(0, r.AuxLoss);
        using var g = zeros(0, 2);
        using var dx = router.Backward(r, g);
        Assert.Equal(new long[] { 0, 4 }, dx.shape);
    }
}
