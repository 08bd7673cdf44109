using MoeCluster.Client;
using MoeCluster.Hosting;
using Orleans.TestingHost;
using Xunit;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// An Orleans in-process test cluster whose silos are MoeCluster silos with CPU slots, and the
/// SDK over its client. Every silo of one cluster gets the same slot count.
/// </summary>
public sealed class MoeTestCluster : IAsyncDisposable
{
    private MoeTestCluster(InProcessTestCluster cluster, string store)
    {
        Cluster = cluster;
        Store = store;
        Client = MoeClusterClient.FromClusterClient(cluster.Client);
    }

    /// <summary>The checkpoint directory the silos share; deleted with the cluster.</summary>
    public string Store { get; }

    public InProcessTestCluster Cluster { get; }
    public MoeClusterClient Client { get; }

    public static async Task<MoeTestCluster> StartAsync(short silos, int expertsPerDevice, bool overcommit = false, int expertWorkers = 0)
    {
        var store = Directory.CreateTempSubdirectory("moe-test-store-").FullName;
        var builder = new InProcessTestClusterBuilder(silos);
        builder.ConfigureSilo((_, silo) => silo.AddMoeCluster(new MoeSiloOptions
        {
            Devices = "cpu",
            ExpertsPerDevice = expertsPerDevice,
            AllowOvercommit = overcommit,
            ExpertWorkers = expertWorkers,
            Store = store,
        }).AddIncomingGrainCallFilter<CallHold>());
        // The SDK's own response timeout (MoeClientOptions), not Orleans' 30 s: what a user's client gets.
        builder.ConfigureClient(client => client.Configure<Orleans.Configuration.ClientMessagingOptions>(
            o => o.ResponseTimeout = new MoeClientOptions().ResponseTimeout));
        var cluster = builder.Build();
        await cluster.DeployAsync();
        var result = new MoeTestCluster(cluster, store);
        await result.WaitForSlotsAsync(silos);
        return result;
    }

    /// <summary>Silo metadata reaches the other silos shortly after they join; wait until every silo's slots are known.</summary>
    public async Task WaitForSlotsAsync(int silos)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            var usage = await Client.GetSlotUsageAsync();
            if (usage.Select(u => u.Silo).Distinct().Count() >= silos && usage.All(u => u.Capacity > 0)) return;
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"the slots of {silos} silos did not become known within 30 s; seen: {string.Join("; ", usage.Select(u => $"{u.Silo} {u.Device} {u.Capacity}"))}");
            await Task.Delay(100);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Client.DisposeAsync();
        await Cluster.DisposeAsync();
        Directory.Delete(Store, recursive: true);
    }
}

/// <summary>One shared 2-silo cluster with room for many layers, for tests that do not count slots.</summary>
public sealed class SharedClusterFixture : IAsyncLifetime
{
    public MoeTestCluster Cluster { get; private set; } = null!;
    public MoeClusterClient Client => Cluster.Client;

    public async Task InitializeAsync() => Cluster = await MoeTestCluster.StartAsync(silos: 2, expertsPerDevice: 512);

    public async Task DisposeAsync() => await Cluster.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class SharedClusterCollection : ICollectionFixture<SharedClusterFixture>
{
    public const string Name = "shared 2-silo cluster";
}
