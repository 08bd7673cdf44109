using MoeCluster.Client;
using MoeCluster.Client.Rebalancing;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>A skewed workload (most tokens to 2 experts on one silo) rebalanced by live moves while the layer trains.</summary>
[Collection(SharedClusterCollection.Name)]
public class RebalanceTests(SharedClusterFixture fixture, ITestOutputHelper output)
{
    private static async Task TrainAsync(RemoteMoeLayer layer, Generator generator, int steps)
    {
        for (int step = 0; step < steps; step++)
        {
            // Positive inputs: the gate below sends nearly every token to the two hot experts.
            using var x = randn(128, 16, generator: generator).mul_(0.1).add_(1);
            using var dy = randn(128, 16, generator: generator).mul_(0.01);
            using var forward = await layer.ForwardAsync(x);
            using var dx = await layer.BackwardAsync(forward.BatchId, dy);
            await layer.StepAsync();
        }
    }

    private static Dictionary<string, double> SiloLoad(LayerStats before, LayerStats after, IEnumerable<string> silos)
    {
        var load = silos.ToDictionary(s => s, _ => 0.0);
        foreach (var e in after.Experts)
            load[e.Expert.Placement.Silo] += e.TokensRouted - before.Experts.Single(b => b.Expert.Index == e.Expert.Index).TokensRouted;
        return load;
    }

    [Fact]
    public async Task A_skewed_layer_is_rebalanced_below_1_25_max_over_mean_across_silos()
    {
        var spec = new LayerSpec { DModel = 16, DFF = 32, NumExperts = 8, TopK = 2, CapacityFactor = 0, Seed = 81, Optimizer = new OptimizerSpec { LearningRate = 1e-4 } };
        var layer = await fixture.Client.CreateLayerAsync("rebalance-skewed", spec);
        var start = await layer.GetStatsAsync();
        var silos = (await fixture.Client.GetSlotUsageAsync()).Select(u => u.Silo).Distinct().Order().ToArray();
        var hot = start.Experts.GroupBy(e => e.Expert.Placement.Silo).First(g => g.Count() >= 2).Take(2).Select(e => e.Expert.Index).ToArray();
        var weights = await layer.GetWeightsAsync();
        using (var gate = zeros(16, 8))
        {
            gate.select(1, hot[0]).fill_(1.0);
            gate.select(1, hot[1]).fill_(0.9);
            weights["gate"].Dispose();
            weights["gate"] = gate.clone();
        }
        await layer.ImportWeightsAsync(weights);
        foreach (var w in weights.Values) w.Dispose();

        using var generator = new Generator(82);
        await TrainAsync(layer, generator, 3);
        var plan = await fixture.Client.PlanRebalanceAsync(layer, since: start);
        foreach (var line in Describe(plan)) output.WriteLine(line);
        Assert.True(plan.RatioBefore > 1.5, $"the workload is skewed: max/mean {plan.RatioBefore:F2}");
        Assert.NotEmpty(plan.Moves);
        Assert.True(plan.RatioAfter < 1.25, $"the plan reaches max/mean {plan.RatioAfter:F2}");

        // The experts' moving averages per step say the same: 128 tokens a step on each hot expert
        // (top-2, dropless), none elsewhere, and compute time only where tokens went.
        var measured = await layer.GetStatsAsync();
        foreach (var e in measured.Experts)
        {
            output.WriteLine($"  expert {e.Expert.Index} on {e.Expert.Placement.Silo}: {e.Expert.TokensPerStep:F1} tokens/step, {e.Expert.ComputeMillisecondsPerStep:F2} ms/step (moving averages)");
            Assert.Equal(hot.Contains(e.Expert.Index) ? 128 : 0, e.Expert.TokensPerStep);
            Assert.True(hot.Contains(e.Expert.Index) == e.Expert.ComputeMillisecondsPerStep > 0, $"expert {e.Expert.Index}: {e.Expert.ComputeMillisecondsPerStep} ms/step");
        }
        var byCompute = await fixture.Client.PlanRebalanceAsync(layer, measure: RebalanceMeasure.ComputeTime);
        foreach (var line in Describe(byCompute)) output.WriteLine(line);
        Assert.Equal("moving average per step", byCompute.Window);
        Assert.Equal(2.0, byCompute.RatioBefore, 6); // both hot experts on one of two silos
        Assert.NotEmpty(byCompute.Moves);
        Assert.All(byCompute.Moves, m => Assert.Contains(m.Expert, hot));
        Assert.Equal(2.0, (await fixture.Client.PlanRebalanceAsync(layer)).RatioBefore, 6); // tokens, moving averages

        var moves = await fixture.Client.ApplyRebalanceAsync(layer, plan);
        Assert.Equal(plan.Moves.Select(m => (m.Expert, m.ToSilo)), moves.Select(m => (m.Expert, m.ToSilo)));
        var rebalanced = await layer.GetStatsAsync();
        Assert.Equal(moves.Length, rebalanced.Moves.Length);
        await TrainAsync(layer, generator, 3);
        var after = await layer.GetStatsAsync();
        var load = SiloLoad(rebalanced, after, silos);
        var ratio = RebalancePlanner.Ratio(load);
        output.WriteLine($"3 steps after {moves.Length} move(s) ({string.Join(", ", moves.Select(m => $"{m.Milliseconds:F0} ms"))}): " +
            $"max/mean load across silos {ratio:F2} ({string.Join(", ", load.Select(l => $"{l.Value:N0}"))} tokens)");
        Assert.True(ratio < 1.25, $"after rebalancing max/mean is {ratio:F2}; expected < 1.25");
        await layer.DeleteAsync();
    }

    private static IEnumerable<string> Describe(RebalancePlan plan)
    {
        var unit = plan.Measure == RebalanceMeasure.Tokens ? "tokens" : "ms";
        yield return $"plan for layer \"{plan.Layer}\" by {unit} ({plan.Window}): max/mean load across silos {plan.RatioBefore:F2} → {plan.RatioAfter:F2} with {plan.Moves.Length} move(s)";
        foreach (var m in plan.Moves) yield return $"  move expert {m.Expert}: {m.FromSilo} → {m.ToSilo} ({m.Load:N0} {unit})";
    }
}
