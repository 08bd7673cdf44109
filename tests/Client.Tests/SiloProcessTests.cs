using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Training;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using MoeCluster.Hosting;

namespace MoeCluster.Client.Tests;

/// <summary>
/// The SDK against silos in their own processes, as a user runs them: localhost membership with
/// the gateways named, and Redis membership with nothing but the Redis address.
/// </summary>
public class SiloProcessTests
{
    private static readonly LayerSpec Spec = new()
    {
        DModel = 16, DFF = 32, NumExperts = 8, TopK = 2, CapacityFactor = 1.25, MinCapacity = 1, Seed = 4,
    };

    [Fact]
    public async Task Sdk_trains_a_layer_on_two_silo_processes_with_localhost_membership()
    {
        var ports = LoopbackPorts.Free(4);
        var clusterId = $"test-{Guid.NewGuid():N}";
        var store = Directory.CreateTempSubdirectory("moe-test-store-").FullName;
        await using var first = await SiloProcess.StartAsync($"--primary-port {ports[0]} --cluster-id {clusterId} --store {store} --devices cpu --experts-per-device 4", ports[0], ports[1]);
        await using var second = await SiloProcess.StartAsync($"--primary-port {ports[0]} --cluster-id {clusterId} --store {store} --devices cpu --experts-per-device 4", ports[2], ports[3]);
        try
        {
            await using var client = await MoeClusterClient.ConnectAsync(new MoeClientOptions { ClusterId = clusterId, GatewayPorts = [ports[1], ports[3]] });
            await TrainAndCheck(client, first, second);
        }
        finally
        {
            await first.DisposeAsync();
            await second.DisposeAsync();
            Directory.Delete(store, recursive: true);
        }
    }

    [Fact]
    public async Task Sdk_finds_silo_processes_through_redis_membership()
    {
        var ports = LoopbackPorts.Free(4);
        var clusterId = $"test-{Guid.NewGuid():N}";
        var cluster = $"redis://{TestRedis.Address}";
        // Checkpoints in Redis too: nothing of this cluster touches the local disk.
        await using var first = await SiloProcess.StartAsync($"--cluster {cluster} --cluster-id {clusterId} --store {cluster} --devices cpu --experts-per-device 4", ports[0], ports[1]);
        await using var second = await SiloProcess.StartAsync($"--cluster {cluster} --cluster-id {clusterId} --store {cluster} --devices cpu --experts-per-device 4", ports[2], ports[3]);
        await using var client = await MoeClusterClient.ConnectAsync(new MoeClientOptions { Cluster = cluster, ClusterId = clusterId });
        await TrainAndCheck(client, first, second);
    }

    /// <summary>
    /// As on two machines: each silo advertises the address given by --address in the membership
    /// table, one this machine's own network address (listening on every interface, as on a real
    /// host) and one a second loopback address; the client finds and reaches both through Redis.
    /// </summary>
    [Fact]
    public async Task Silos_started_with_address_are_reached_at_it_through_redis_membership()
    {
        var ports = LoopbackPorts.Free(4);
        var clusterId = $"test-{Guid.NewGuid():N}";
        var cluster = $"redis://{TestRedis.Address}";
        var host = System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces()
            .Where(n => n.OperationalStatus == System.Net.NetworkInformation.OperationalStatus.Up)
            .SelectMany(n => n.GetIPProperties().UnicastAddresses).Select(a => a.Address)
            .FirstOrDefault(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork && !System.Net.IPAddress.IsLoopback(a))
            ?.ToString() ?? "127.0.0.3";
        var common = $"--cluster {cluster} --cluster-id {clusterId} --store {cluster} --devices cpu --experts-per-device 4";
        await using var first = await SiloProcess.StartAsync($"{common} --address {host}", ports[0], ports[1]);
        await using var second = await SiloProcess.StartAsync($"{common} --address 127.0.0.2", ports[2], ports[3]);
        await using var client = await MoeClusterClient.ConnectAsync(new MoeClientOptions { Cluster = cluster, ClusterId = clusterId });
        await TrainAndCheck(client, first, second);
        var silos = (await (await client.GetLayerAsync("remote")).GetStatsAsync()).Experts.Select(e => e.Expert.Placement.Silo).Distinct().Order().ToList();
        Assert.Equal(2, silos.Count);
        Assert.Contains(silos, s => s.Contains($"{host}:{ports[0]}"));
        Assert.Contains(silos, s => s.Contains($"127.0.0.2:{ports[2]}"));
    }

    [Fact]
    public async Task A_bad_cluster_address_is_refused_by_the_sdk_and_the_silo()
    {
        var error = await Assert.ThrowsAsync<ArgumentException>(() => MoeClusterClient.ConnectAsync(new MoeClientOptions { Cluster = "zookeeper://x" }));
        Assert.Equal("cluster is 'zookeeper://x'; expected localhost or redis://host:port", error.Message);
        var ports = LoopbackPorts.Free(2);
        var silo = await Assert.ThrowsAsync<InvalidOperationException>(() => SiloProcess.StartAsync("--cluster zookeeper://x", ports[0], ports[1]));
        Assert.Contains("moe silo: --cluster is 'zookeeper://x'; expected localhost or redis://host:port", silo.Message);
    }

    /// <summary>Three steps of training, checked against the reference; the experts split 4/4 and each silo logged its own.</summary>
    private static async Task TrainAndCheck(MoeClusterClient client, SiloProcess first, SiloProcess second)
    {
        await WaitForSlots(client, silos: 2);
        var layer = await client.CreateLayerAsync("remote", Spec);
        var reference = new ReferenceMoeLayer(LayerSpecMapping.ToConfig(Spec), Spec.Seed, "remote");
        using var optimizer = OptimizerFactory.Create(Spec.Optimizer, reference.parameters());
        using var generator = new Generator(5);
        for (int step = 1; step <= 3; step++)
        {
            using var x = randn(32, Spec.DModel, generator: generator);
            using var dy = randn(32, Spec.DModel, generator: generator);
            using (var input = x.detach().requires_grad_(true))
            using (var r = reference.Forward(input, train: true, noiseSeed: 0))
            using (var loss = r.Y.mul(dy).sum().add(r.Aux))
                loss.backward();
            OptimizerFactory.Step(optimizer, reference.parameters(), 1.0);
            using var forward = await layer.ForwardAsync(x);
            using var dx = await layer.BackwardAsync(forward.BatchId, dy);
            Assert.Equal(step, await layer.StepAsync());
        }
        var weights = await layer.GetWeightsAsync();
        foreach (var (name, parameter) in reference.named_parameters())
        {
            using var diff = weights[name].sub(parameter);
            var error = diff.norm().item<float>() / parameter.norm().item<float>();
            Assert.True(error <= 1e-5, $"{name}: relative error {error:E2}");
        }
        var stats = await layer.GetStatsAsync();
        Assert.All(stats.Experts.GroupBy(e => e.Expert.Placement.Silo), g => Assert.Equal(4, g.Count()));
        var logged = first.Log + second.Log;
        for (int e = 0; e < 8; e++) Assert.Contains($"Expert remote/{e} placed on silo", logged);
    }

    private static async Task WaitForSlots(MoeClusterClient client, int silos)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while ((await client.GetSlotUsageAsync()).Where(u => u.Capacity > 0).Select(u => u.Silo).Distinct().Count() < silos)
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"{silos} silos did not see each other's slots within 30 s");
            await Task.Delay(100);
        }
    }
}
