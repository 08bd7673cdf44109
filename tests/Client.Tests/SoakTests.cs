using System.Diagnostics;
using MoeCluster.Grains.Telemetry;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Client.Tests;

/// <summary>
/// 2,000 training steps against two silo processes: their resident memory and live TorchSharp
/// tensor count stay flat after warm-up (a leaked tensor per step would show), nothing stays
/// pending or kept (saved forwards, pending batches, kept answers), and the checkpoint store keeps
/// two versions per key. And the trainer's side: a model trained through <see cref="RemoteMoeModule"/>
/// keeps no tensor per step.
/// </summary>
public class SoakTests(ITestOutputHelper output)
{
    private const int Steps = 2000, WarmUp = 500;

    [Fact]
    public async Task Two_thousand_steps_leave_memory_and_saved_state_flat()
    {
        await using var cluster = await ProcessCluster.StartAsync(silos: 2, "--devices cpu --experts-per-device 4 --threads 1");
        await using var client = await cluster.Connect();
        // Tensors large enough that one leaked per step (64 × 64 floats, 16 KiB) would add 30 MB.
        var layer = await client.CreateLayerAsync("soak", new LayerSpec { DModel = 64, DFF = 128, NumExperts = 4, TopK = 2, Seed = 2 });
        using var generator = new Generator(3);
        using var x = randn(64, 64, generator: generator);
        using var dy = randn(64, 64, generator: generator).mul_(0.01);

        long[] warm = [];
        Dictionary<string, long> warmTensors = [];
        var watch = Stopwatch.StartNew();
        for (int step = 1; step <= Steps; step++)
        {
            using (var forward = await layer.ForwardAsync(x))
            using (await layer.BackwardAsync(forward.BatchId, dy)) { }
            await layer.StepAsync();
            if (step == WarmUp)
            {
                warm = cluster.Silos.Select(s => s.ResidentBytes()).ToArray();
                var warmStats = await layer.GetStatsAsync();
                warmTensors = await LiveTensorsBySilo(client, "soak", warmStats);
                Assert.Equal(0, warmStats.KeptAnswers);
            }
        }
        await layer.FlushAsync();
        var end = cluster.Silos.Select(s => s.ResidentBytes()).ToArray();
        var stats = await layer.GetStatsAsync();
        var endTensors = await LiveTensorsBySilo(client, "soak", stats);

        output.WriteLine($"{Steps} steps in {watch.Elapsed.TotalSeconds:F0} s; silo resident memory after step {WarmUp} → {Steps}: " +
            string.Join(", ", warm.Zip(end, (a, b) => $"{a / 1048576.0:F0} → {b / 1048576.0:F0} MiB ({(b - a) * 100.0 / a:+0.0;-0.0} %)")));
        output.WriteLine($"live TorchSharp tensors per silo (after a full GC) after step {WarmUp} → {Steps}: " +
            string.Join(", ", warmTensors.Select(w => $"{w.Value} → {endTensors.GetValueOrDefault(w.Key)}")));
        Assert.Equal(warmTensors.Keys.Order(), endTensors.Keys.Order());
        foreach (var (silo, count) in warmTensors)
            Assert.True(endTensors[silo] <= count * 1.05, $"silo {silo} went from {count} to {endTensors[silo]} live tensors (more than 5 %)");
        for (int i = 0; i < end.Length; i++)
            Assert.True(end[i] <= warm[i] * 1.05, $"silo {i} grew from {warm[i] / 1048576.0:F0} to {end[i] / 1048576.0:F0} MiB (more than 5 %)");
        Assert.Equal(Steps, stats.Version);
        Assert.Equal(0, stats.PendingBatches);
        Assert.All(stats.Experts, e => Assert.Equal(0, e.Expert.PendingForwards));
        Assert.Equal(0, stats.KeptAnswers);
        Assert.Equal(0, stats.ExpiredBatches);
        var layerDirectory = Directory.GetDirectories(cluster.Store, "soak", SearchOption.AllDirectories).Single();
        var versions = Directory.GetFiles(layerDirectory, "*.ckpt", SearchOption.AllDirectories).GroupBy(Path.GetDirectoryName).ToList();
        Assert.Equal(5, versions.Count); // the router and 4 experts
        Assert.All(versions, v => Assert.Equal(2, v.Count()));
    }

    /// <summary>
    /// The trainer's side: a model whose layer is a <see cref="RemoteMoeModule"/>, trained with
    /// <c>loss.backward()</c>, holds no more tensors after 150 more steps (the silos are other
    /// processes, so this process's count is the trainer's alone). Before the fix the module's
    /// autograd context kept each forward's y, and with it TorchSharp's node of that step: one
    /// y-sized tensor per step, for good.
    /// </summary>
    [Fact]
    public async Task A_model_trained_through_the_remote_module_keeps_no_tensor_per_step()
    {
        await using var cluster = await ProcessCluster.StartAsync(silos: 1, "--devices cpu --experts-per-device 4 --threads 1");
        await using var client = await cluster.Connect();
        var layer = await client.CreateLayerAsync("module-soak", new LayerSpec { DModel = 16, DFF = 32, NumExperts = 4, TopK = 1, Seed = 4 });
        using var module = new RemoteMoeModule(layer);
        using var generator = new Generator(5);
        using var w = randn(16, 16, generator: generator).requires_grad_(true);
        using var x = randn(32, 16, generator: generator);
        long warm = 0;
        for (int step = 1; step <= 200; step++)
        {
            using (var scope = NewDisposeScope())
            {
                var y = module.forward(x.matmul(w));
                y.square().mean().add(module.AuxLoss!).backward();
            }
            w.grad!.zero_();
            await layer.StepAsync();
            if (step == 50) warm = LiveTensors.CountAfterCollection();
        }
        var end = LiveTensors.CountAfterCollection();
        output.WriteLine($"live TorchSharp tensors of the trainer after step 50 → 200: {warm} → {end}");
        Assert.True(end <= warm + 2, $"the trainer went from {warm} to {end} live tensors in 150 steps");
    }

    /// <summary>
    /// Each silo's live tensor count after a full garbage collection (every grain's tensors in its
    /// process), asked of the layer's router and of one expert per silo.
    /// </summary>
    private static async Task<Dictionary<string, long>> LiveTensorsBySilo(MoeClusterClient client, string layer, LayerStats stats)
    {
        var counts = new Dictionary<string, long>();
        foreach (var group in stats.Experts.GroupBy(e => e.Expert.Placement.Silo))
            counts[group.Key] = await client.Orleans.GetGrain<IMoeExpertGrain>(group.First().Expert.Index, layer).CountSiloLiveTensors();
        counts[stats.Router.Silo] = await client.Orleans.GetGrain<IMoeRouterGrain>(layer).CountSiloLiveTensors();
        return counts;
    }
}
