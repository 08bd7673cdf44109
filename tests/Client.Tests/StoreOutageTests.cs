using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Client.Tests;

/// <summary>The checkpoint store's Redis missing at start, or going away during a run.</summary>
public class StoreOutageTests
{
    [Fact]
    public async Task A_silo_whose_checkpoint_redis_is_down_does_not_start()
    {
        var ports = SiloProcess.FreePorts(3);
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            SiloProcess.StartAsync($"--store redis://127.0.0.1:{ports[2]} --primary-port {ports[0]}", ports[0], ports[1]));
        Assert.Contains($"moe silo: cannot start: cannot reach the checkpoint Redis at 127.0.0.1:{ports[2]}", error.Message);
    }

    [Fact]
    public async Task A_silo_whose_membership_redis_is_down_does_not_start()
    {
        var ports = SiloProcess.FreePorts(3);
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

    [Fact]
    public async Task A_step_that_cannot_write_its_checkpoint_fails_loudly_and_the_run_resumes_exactly_once_the_store_is_back()
    {
        await using var storeRedis = new RedisProcess();
        await storeRedis.StartAsync();
        await using var cluster = await ProcessCluster.StartAsync(silos: 2, $"--devices cpu --experts-per-device 8 --threads 1",
            store: $"redis://{storeRedis.Address}");
        await using var client = await cluster.Connect();
        var spec = new LayerSpec { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, Seed = 3 };
        var layer = await client.CreateLayerAsync("outage", spec);
        using var generator = new Generator(4);
        using var x = randn(16, 8, generator: generator);
        using var dy = randn(16, 8, generator: generator);

        async Task MicroBatch()
        {
            using var forward = await layer.ForwardAsync(x);
            using var dx = await layer.BackwardAsync(forward.BatchId, dy);
        }

        await MicroBatch();
        Assert.Equal(1, await layer.StepAsync());
        await MicroBatch();
        await storeRedis.StopAsync();
        var failed = await Assert.ThrowsAsync<CheckpointWriteException>(() => layer.StepAsync());
        Assert.Matches(@"^checkpoint layers/outage/(experts/\d|router) version 2 of .* could not be written: ", failed.Message);
        Assert.Equal(1, await layer.GetVersionAsync()); // step 2 is not committed without its checkpoints

        await storeRedis.StartAsync(); // an empty Redis: the version-1 checkpoints are gone, only new writes count
        Assert.Equal(2, await layer.StepAsync());
        Assert.Equal(0, layer.Recoveries);
        Assert.Equal(2, (await layer.GetStatsAsync()).Experts.Select(e => e.Expert.Version).Distinct().Single());
    }
}
