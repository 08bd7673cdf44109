using MoeCluster.Client;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Client.Tests;

/// <summary>Three silo processes on Redis membership, one killed in the middle of a training step.</summary>
public sealed class FailoverBaseline : IAsyncLifetime
{
    /// <summary>The weights of the same run without a failure, on a cluster of the same shape.</summary>
    public Dictionary<string, Tensor> Weights { get; private set; } = [];

    public async Task InitializeAsync()
    {
        await using var cluster = await FailoverTests.StartCluster();
        await using var client = await cluster.Connect();
        var layer = await client.CreateLayerAsync(FailoverTests.LayerName, FailoverTests.Spec);
        await FailoverTests.Train(layer, killBefore: null, cluster);
        Weights = await layer.GetWeightsAsync();
    }

    public Task DisposeAsync()
    {
        foreach (var w in Weights.Values) w.Dispose();
        return Task.CompletedTask;
    }
}

public class FailoverTests(FailoverBaseline baseline, ITestOutputHelper output) : IClassFixture<FailoverBaseline>
{
    public const string LayerName = "failover";
    public const int Steps = 5, MicroBatches = 2, KillStep = 4;

    public static readonly LayerSpec Spec = new()
    {
        DModel = 16, DFF = 32, NumExperts = 8, TopK = 2, CapacityFactor = 1.25, MinCapacity = 1, Seed = 11,
        JitterEpsilon = 0.01, Optimizer = new OptimizerSpec { MaxGradNorm = 1.0 },
    };

    public enum Phase { Forward, Backward, Step }

    [Fact]
    public async Task Two_runs_without_a_failure_end_bit_identical()
    {
        await using var cluster = await StartCluster();
        await using var client = await cluster.Connect();
        var layer = await client.CreateLayerAsync(LayerName, Spec);
        await Train(layer, killBefore: null, cluster);
        var weights = await layer.GetWeightsAsync();
        foreach (var (name, expected) in baseline.Weights)
        {
            using var diff = weights[name].sub(expected);
            Assert.True(weights[name].Equals(expected), $"{name} differs by {diff.norm().item<float>() / expected.norm().item<float>():E2} relative");
        }
    }

    [Theory]
    [InlineData(Phase.Forward, true, 1)]    // the router's silo dies as step 4's second forward starts
    [InlineData(Phase.Backward, false, 1)]  // an experts-only silo dies before step 4's first backward
    [InlineData(Phase.Step, false, 1)]      // an experts-only silo dies as step 4 is applied
    [InlineData(Phase.Backward, true, 3)]   // checkpoints every 3 steps: version 3 is durable; step 4 is replayed…
    [InlineData(Phase.Step, true, 2)]       // …and every 2: version 2 is durable; steps 3 and 4 are replayed
    public async Task A_silo_killed_mid_step_costs_no_exception_and_no_weight(Phase phase, bool routerSilo, int checkpointEvery)
    {
        await using var cluster = await StartCluster();
        await using var client = await cluster.Connect();
        // The checkpoint interval changes when state is written, not the arithmetic: same weights as the baseline.
        var layer = await client.CreateLayerAsync(LayerName, Spec with { CheckpointEvery = checkpointEvery });
        var stats = await layer.GetStatsAsync();
        var routerAt = stats.Router.Silo;
        var victim = cluster.Silos.First(s => routerSilo
            ? routerAt.Contains($":{s.SiloPort}:")
            : !routerAt.Contains($":{s.SiloPort}:") && stats.Experts.Any(e => e.Expert.Placement.Silo.Contains($":{s.SiloPort}:")));

        var recovered = await Train(layer, (phase, victim), cluster);

        Assert.Equal(1, layer.Recoveries);
        output.WriteLine($"{phase}: killed silo {victim.SiloPort}; recovered in {layer.LastRecoveryTime?.TotalSeconds:F1} s; kill → next completed step {recovered.TotalSeconds:F1} s");
        var weights = await layer.GetWeightsAsync();
        Assert.Equal(baseline.Weights.Keys.Order(), weights.Keys.Order());
        foreach (var (name, expected) in baseline.Weights)
        {
            using var diff = weights[name].sub(expected);
            var relative = diff.norm().item<float>() / expected.norm().item<float>();
            Assert.True(weights[name].Equals(expected),
                $"{name} differs from the run without a failure by {relative:E2} relative (expected bit for bit; every silo runs libtorch with 1 thread)");
        }
        var after = await layer.GetStatsAsync();
        Assert.Equal(Steps, after.Version);
        Assert.DoesNotContain(after.Experts, e => e.Expert.Placement.Silo.Contains($":{victim.SiloPort}:"));
    }

    /// <summary>Trains <see cref="Steps"/> steps of <see cref="MicroBatches"/> micro-batches; returns the time from the kill to the next completed step.</summary>
    public static async Task<TimeSpan> Train(RemoteMoeLayer layer, (Phase Phase, SiloProcess Victim)? killBefore, ProcessCluster cluster)
    {
        using var generator = new Generator(12);
        DateTime? killedAt = null;
        var recovery = TimeSpan.Zero;
        async Task MaybeKill(Phase phase, int step, int micro)
        {
            if (killBefore is { } k && k.Phase == phase && step == KillStep && micro == (phase == Phase.Forward ? 1 : 0) && killedAt is null)
            {
                await k.Victim.DisposeAsync(); // SIGKILL: no graceful shutdown
                killedAt = DateTime.UtcNow;
            }
        }
        for (int step = 1; step <= Steps; step++)
        {
            var forwards = new List<(RemoteLayerForward Forward, Tensor Dy)>();
            for (int micro = 0; micro < MicroBatches; micro++)
            {
                var x = randn(48, Spec.DModel, generator: generator);
                var dy = randn(48, Spec.DModel, generator: generator).mul_(0.1);
                await MaybeKill(Phase.Forward, step, micro);
                // Fixed batch ids: the jitter noise is drawn from the batch id, so both runs must use the same ones.
                forwards.Add((await layer.ForwardAsync(x, batchId: step * 100 + micro), dy));
            }
            for (int micro = 0; micro < MicroBatches; micro++)
            {
                await MaybeKill(Phase.Backward, step, micro);
                using var dx = await layer.BackwardAsync(forwards[micro].Forward.BatchId, forwards[micro].Dy);
            }
            await MaybeKill(Phase.Step, step, 0);
            Assert.Equal(step, await layer.StepAsync());
            if (killedAt is { } at && recovery == TimeSpan.Zero) recovery = DateTime.UtcNow - at;
            foreach (var (f, dy) in forwards) { f.Dispose(); dy.Dispose(); }
        }
        return recovery;
    }

    public static async Task<ProcessCluster> StartCluster() => await ProcessCluster.StartAsync(silos: 3,
        $"--devices cpu --experts-per-device 4 --threads 1");
}
