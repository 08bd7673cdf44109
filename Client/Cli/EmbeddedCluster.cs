using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using MoeCluster.Hosting;

namespace MoeCluster.Cli;

/// <summary>
/// Silos hosted inside this process on free loopback ports, joined by localhost membership: the
/// cluster of <c>./moe demo</c> when no <c>--cluster</c> is given. The demo's SDK reaches them
/// through their gateways, as it would reach remote silos; the LM trainer calls through the
/// first silo's own client (<see cref="CoHostedClient"/>).
/// </summary>
public sealed class EmbeddedCluster : IAsyncDisposable
{
    private readonly List<IHost> hosts = [];

    private readonly bool ownsStore;

    private EmbeddedCluster(string clusterId, string store, bool ownsStore)
    {
        ClusterId = clusterId;
        Store = store;
        this.ownsStore = ownsStore;
    }

    public string ClusterId { get; }
    /// <summary>The silos' checkpoint directory: temporary, like the cluster, and deleted with it, unless the caller named one.</summary>
    public string Store { get; }
    public int[] GatewayPorts { get; private set; } = [];
    public int SiloCount => hosts.Count;

    /// <summary>
    /// The first silo's co-hosted Orleans client: its calls reach grains of that silo without a
    /// connection or a copy (payloads are immutable) and the other silos as grains do. The layers
    /// a client creates through it get their routers there (<c>PreferLocalPlacement</c>).
    /// </summary>
    public IClusterClient CoHostedClient => hosts.Count > 0 ? hosts[0].Services.GetRequiredService<IClusterClient>()
        : throw new InvalidOperationException("the embedded cluster has no silo");

    /// <summary>
    /// Starts the silos. With <paramref name="store"/>, checkpoints go to that directory and stay
    /// when the cluster stops, so that a later cluster on it finds the layers again (a trainer
    /// that resumes); without it, to a temporary one.
    /// </summary>
    public static async Task<EmbeddedCluster> StartAsync(int silos, int expertsPerDevice, CancellationToken cancellationToken = default, string? store = null)
    {
        if (silos < 1) throw new ArgumentException($"--silos is {silos}; expected ≥ 1");
        var cluster = store is null
            ? new EmbeddedCluster($"moe-embedded-{Environment.ProcessId}", Directory.CreateTempSubdirectory("moe-embedded-store-").FullName, ownsStore: true)
            // The store keys its checkpoints by cluster id: one that does not change from run to run.
            : new EmbeddedCluster("moe-embedded", Directory.CreateDirectory(store).FullName, ownsStore: false);
        var ports = LoopbackPorts.Free(2 * silos);
        // The silos share this process's cores with each other and with the caller. Each silo's
        // compute gets an even share of libtorch threads (one each for 2 silos on 2 cores), so the
        // experts of both silos compute side by side without oversubscribing the cores; and the
        // process-wide count that a silo sets is put back afterwards, so that the caller's own
        // tensor work keeps libtorch's default. Measured with `lm bench` (README).
        var share = Math.Max(1, Environment.ProcessorCount / silos);
        var callerThreads = TorchSharp.torch.get_num_threads();
        try
        {
            for (int i = 0; i < silos; i++)
            {
                var host = MoeSiloHost.Build(new MoeSiloOptions
                {
                    ClusterId = cluster.ClusterId,
                    SiloPort = ports[2 * i],
                    GatewayPort = ports[2 * i + 1],
                    PrimarySiloPort = ports[0],
                    Devices = "auto",
                    ExpertsPerDevice = expertsPerDevice,
                    TorchThreads = share,
                    SiloName = $"embedded-{i}",
                    Store = cluster.Store,
                }, logging: l => { });
                cluster.hosts.Add(host);
                await host.StartAsync(cancellationToken);
            }
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
        finally
        {
            TorchSharp.torch.set_num_threads(callerThreads);
        }
        cluster.GatewayPorts = Enumerable.Range(0, silos).Select(i => ports[2 * i + 1]).ToArray();
        return cluster;
    }

    public async ValueTask DisposeAsync()
    {
        // Stop the silos that joined last first, so the primary outlives its peers.
        for (int i = hosts.Count - 1; i >= 0; i--)
        {
            try { await hosts[i].StopAsync(TimeSpan.FromSeconds(10)); } catch (OperationCanceledException) { }
            hosts[i].Dispose();
        }
        hosts.Clear();
        if (ownsStore)
            try { Directory.Delete(Store, recursive: true); } catch (IOException) { }
    }
}
