using MoeCluster.Client;
using MoeCluster.Hosting;

namespace MoeCluster.Client.Tests;

/// <summary>
/// Silo processes joined through the test Redis server, sharing a checkpoint directory of their
/// own; stopped and deleted on dispose.
/// </summary>
public sealed class ProcessCluster : IAsyncDisposable
{
    private readonly bool ownsStore;
    private readonly string arguments;

    private readonly string membership;

    private ProcessCluster(string clusterId, string store, List<SiloProcess> silos, bool ownsStore, string arguments, string membership)
    {
        this.membership = membership;
        this.ownsStore = ownsStore;
        this.arguments = arguments;
        ClusterId = clusterId;
        Store = store;
        Silos = silos;
    }

    public string ClusterId { get; }
    public string Store { get; }
    public List<SiloProcess> Silos { get; }
    public string Address => $"redis://{membership}";

    /// <summary>
    /// Starts <paramref name="silos"/> silos; a new cluster id and checkpoint directory unless given
    /// (a restart, or <c>redis://…</c> for a Redis store). Membership goes through the test Redis
    /// unless <paramref name="membership"/> (host:port) names another.
    /// </summary>
    public static async Task<ProcessCluster> StartAsync(int silos, string arguments, string? clusterId = null, string? store = null, string? membership = null)
    {
        membership ??= TestRedis.Address;
        var ownsStore = store is null;
        clusterId ??= $"test-{Guid.NewGuid():N}";
        store ??= Directory.CreateTempSubdirectory("moe-test-store-").FullName;
        var ports = LoopbackPorts.Free(2 * silos);
        var full = $"--cluster redis://{membership} --cluster-id {clusterId} --store {store} {arguments}";
        var started = await Task.WhenAll(Enumerable.Range(0, silos).Select(i => SiloProcess.StartAsync(full, ports[2 * i], ports[2 * i + 1])));
        return new ProcessCluster(clusterId, store, started.ToList(), ownsStore, full, membership);
    }

    /// <summary>Starts one more silo with the same arguments (a replacement for a lost one) and returns it.</summary>
    public async Task<SiloProcess> AddSiloAsync() => await AddSiloAsync("");

    /// <summary>Starts one more silo with the same arguments and <paramref name="more"/> (e.g. its own status port).</summary>
    public async Task<SiloProcess> AddSiloAsync(string more)
    {
        var ports = LoopbackPorts.Free(2);
        var silo = await SiloProcess.StartAsync($"{arguments} {more}", ports[0], ports[1]);
        Silos.Add(silo);
        return silo;
    }

    public async Task<MoeClusterClient> Connect()
    {
        var client = await MoeClusterClient.ConnectAsync(new MoeClientOptions { Cluster = Address, ClusterId = ClusterId });
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while ((await client.GetSlotUsageAsync()).Where(u => u.Capacity > 0).Select(u => u.Silo).Distinct().Count() < Silos.Count)
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"{Silos.Count} silos did not see each other's slots within 30 s");
            await Task.Delay(100);
        }
        return client;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var s in Silos) await s.DisposeAsync();
        if (ownsStore && Directory.Exists(Store))
            try { Directory.Delete(Store, recursive: true); } catch (IOException) { }
    }
}
