using MoeCluster.Client;
using MoeCluster.Client.Tests;
using Xunit;
using MoeCluster.Hosting;

namespace MoeCluster.Cli.Tests;

/// <summary>
/// One silo process for the command tests, with its status page, Prometheus endpoint and OTLP export on, so
/// that one start (the slowest part) serves every command.
/// </summary>
public sealed class RunningCluster : IAsyncLifetime
{
    public ProcessCluster Cluster { get; private set; } = null!;
    public MoeClusterClient Client { get; private set; } = null!;
    public int StatusPort { get; private set; }
    public int PrometheusPort { get; private set; }
    /// <summary>The collector the silo exports its metrics to over OTLP/HTTP, every second.</summary>
    public OtlpReceiver Otlp { get; private set; } = null!;

    /// <summary>The options that point a CLI command at this cluster.</summary>
    public string Connect => $"--cluster {Cluster.Address} --cluster-id {Cluster.ClusterId}";

    public async Task InitializeAsync()
    {
        var ports = LoopbackPorts.Free(3);
        (StatusPort, PrometheusPort) = (ports[0], ports[1]);
        Otlp = new OtlpReceiver(ports[2]);
        Cluster = await ProcessCluster.StartAsync(silos: 1,
            $"--devices cpu --experts-per-device 16 --threads 1 --status-port {StatusPort} --prometheus-port {PrometheusPort} " +
            $"--otlp-endpoint {Otlp.Endpoint} --otlp-protocol http --otlp-interval 1");
        Client = await Cluster.Connect();
    }

    public Task<(int ExitCode, string Stdout, string Stderr)> Moe(string arguments) =>
        MoeProcess.RunAsync(MoeProcess.CliDll, arguments, TimeSpan.FromMinutes(2));

    public async Task DisposeAsync()
    {
        await Client.DisposeAsync();
        await Cluster.DisposeAsync();
        await Otlp.DisposeAsync();
    }
}

[CollectionDefinition(Name)]
public sealed class RunningClusterCollection : ICollectionFixture<RunningCluster>
{
    public const string Name = "one silo process with its status page";
}
