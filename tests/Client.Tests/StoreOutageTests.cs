using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using MoeCluster.Hosting;

namespace MoeCluster.Client.Tests;

/// <summary>The checkpoint store's Redis missing at start, or going away during a run.</summary>
public class StoreOutageTests
{
    [Fact]
    public async Task A_silo_whose_checkpoint_redis_is_down_does_not_start()
    {
        var ports = LoopbackPorts.Free(3);
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            SiloProcess.StartAsync($"--store redis://127.0.0.1:{ports[2]} --primary-port {ports[0]}", ports[0], ports[1]));
        Assert.Contains($"moe silo: cannot start: cannot reach the checkpoint Redis at 127.0.0.1:{ports[2]}", error.Message);
    }

    [Fact]
    public async Task A_silo_whose_membership_redis_is_down_does_not_start()
    {
        var ports = LoopbackPorts.Free(3);
        var store = Directory.CreateTempSubdirectory("moe-test-store-").FullName;
        try
        {
            var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
                SiloProcess.StartAsync($"--cluster redis://127.0.0.1:{ports[2]} --store {store}", ports[0], ports[1]));
            Assert.Contains($"moe silo: cannot start: cannot reach the membership Redis (redis://127.0.0.1:{ports[2]})", error.Message);
        }
        finally
        {
            Directory.Delete(store, recursive: true);
        }
    }

    /// <summary>
    /// Step 2's checkpoints are written while step 3's micro-batches run; with the store gone they
    /// cannot be, so step 3 fails loudly and is not applied. Once the store is back, repeating
    /// step 3 writes version 2 first: the run goes on, never more than one step beyond its checkpoints.
    /// </summary>
    [Fact]
    public async Task A_checkpoint_that_cannot_be_written_fails_the_next_step_and_the_run_resumes_exactly_once_the_store_is_back()
    {
        await using var storeRedis = new RedisProcess();
        await storeRedis.StartAsync();
        await using var cluster = await ProcessCluster.StartAsync(silos: 2, $"--devices cpu --experts-per-device 8 --threads 1",
            store: $"redis://{storeRedis.Address}");
        await using var client = await cluster.Connect();
        var layer = await client.CreateLayerAsync("outage", Spec);
        using var generator = new Generator(4);
        using var x = randn(16, 8, generator: generator);
        using var dy = randn(16, 8, generator: generator);

        Task MicroBatch() => OneMicroBatch(layer, x, dy);

        await MicroBatch();
        Assert.Equal(1, await layer.StepAsync());
        Assert.Equal(1, await layer.FlushAsync());
        await MicroBatch();
        await storeRedis.StopAsync();
        Assert.Equal(2, await layer.StepAsync()); // its checkpoints are captured; writing them fails later
        await MicroBatch();
        var failed = await Assert.ThrowsAsync<CheckpointWriteException>(() => layer.StepAsync());
        Assert.Matches(@"^step 3 is not applied to layer ""outage"" until version 2 is durable: checkpoint layers/outage/(experts/\d|router) version 2 of .* could not be written: ", failed.Message);
        Assert.Equal(2, await layer.GetVersionAsync());

        await storeRedis.StartAsync(); // an empty Redis: only new writes count
        Assert.Equal(3, await layer.StepAsync());
        Assert.Equal(3, await layer.FlushAsync());
        Assert.Equal(0, layer.Recoveries);
        Assert.Equal(3, (await layer.GetStatsAsync()).Experts.Select(e => e.Expert.Version).Distinct().Single());
    }

    [Fact]
    public async Task With_checkpoints_before_the_step_returns_the_step_that_cannot_write_them_fails_and_is_not_applied()
    {
        await using var storeRedis = new RedisProcess();
        await storeRedis.StartAsync();
        await using var cluster = await ProcessCluster.StartAsync(silos: 2, $"--devices cpu --experts-per-device 8 --threads 1",
            store: $"redis://{storeRedis.Address}");
        await using var client = await cluster.Connect();
        var layer = await client.CreateLayerAsync("outage", Spec with { CheckpointBeforeStepReturns = true });
        using var generator = new Generator(4);
        using var x = randn(16, 8, generator: generator);
        using var dy = randn(16, 8, generator: generator);

        await OneMicroBatch(layer, x, dy);
        Assert.Equal(1, await layer.StepAsync());
        await OneMicroBatch(layer, x, dy);
        await storeRedis.StopAsync();
        var failed = await Assert.ThrowsAsync<CheckpointWriteException>(() => layer.StepAsync());
        Assert.Matches(@"^checkpoint layers/outage/(experts/\d|router) version 2 of .* could not be written: ", failed.Message);
        Assert.Equal(1, await layer.GetVersionAsync()); // step 2 is not committed without its checkpoints

        await storeRedis.StartAsync(); // an empty Redis: the version-1 checkpoints are gone, only new writes count
        Assert.Equal(2, await layer.StepAsync());
        Assert.Equal(0, layer.Recoveries);
        Assert.Equal(2, (await layer.GetStatsAsync()).Experts.Select(e => e.Expert.Version).Distinct().Single());
    }

    private static readonly LayerSpec Spec = new() { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, Seed = 3 };

    private static async Task OneMicroBatch(RemoteMoeLayer layer, Tensor x, Tensor dy)
    {
        using var forward = await layer.ForwardAsync(x);
        using var dx = await layer.BackwardAsync(forward.BatchId, dy);
    }
}
