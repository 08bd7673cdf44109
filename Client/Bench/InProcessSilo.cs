using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using MoeCluster.Client;
using MoeCluster.Hosting;

namespace MoeCluster.Bench;

/// <summary>(b): one silo hosted in this process, called through the SDK over its co-hosted client.</summary>
public sealed class InProcessSilo : IAsyncDisposable
{
    private readonly IHost host;
    private readonly DirectoryInfo store;

    private InProcessSilo(IHost host, DirectoryInfo store)
    {
        this.host = host;
        this.store = store;
        Client = MoeClusterClient.FromClusterClient(host.Services.GetRequiredService<IClusterClient>());
    }

    public MoeClusterClient Client { get; }

    /// <param name="expertWorkers">CPU experts computing at once (<see cref="MoeSiloOptions.ExpertWorkers"/>); 0: the silo's default.</param>
    /// <param name="name">Tells apart two in-process silos of one run: each is a cluster of its own.</param>
    public static async Task<InProcessSilo> StartAsync(int expertsPerDevice, int torchThreads, CancellationToken cancellationToken,
        int expertWorkers = 0, string name = "inproc")
    {
        var store = Directory.CreateTempSubdirectory("moe-bench-store-");
        var ports = LoopbackPorts.Free(2);
        var host = MoeSiloHost.Build(new MoeSiloOptions
        {
            SiloPort = ports[0], PrimarySiloPort = ports[0], GatewayPort = ports[1], Devices = "cpu",
            ExpertsPerDevice = expertsPerDevice, TorchThreads = torchThreads, ExpertWorkers = expertWorkers, Store = store.FullName,
            ClusterId = $"moe-bench-{name}-{Environment.ProcessId}",
        }, logging: _ => { });
        await host.StartAsync(cancellationToken);
        return new InProcessSilo(host, store);
    }

    public async ValueTask DisposeAsync()
    {
        await host.StopAsync();
        host.Dispose();
        try { store.Delete(recursive: true); } catch (IOException) { }
    }
}
