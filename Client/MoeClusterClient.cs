using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

namespace MoeCluster.Client;

/// <summary>
/// The SDK's entry point: a connection to a MoeCluster, and the layers in it.
/// <code>
/// await using var cluster = await MoeClusterClient.ConnectAsync(new MoeClientOptions());
/// var layer = await cluster.CreateLayerAsync("ffn-0", new LayerSpec { DModel = 512, DFF = 2048, NumExperts = 8 });
/// using var forward = await layer.ForwardAsync(x);
/// using var dx = await layer.BackwardAsync(forward.BatchId, dy);
/// await layer.StepAsync();
/// </code>
/// </summary>
public sealed class MoeClusterClient : IAsyncDisposable
{
    private readonly IHost? host;
    private readonly ILoggerFactory loggers;
    private readonly TimeSpan recoveryTimeout;

    private readonly ConnectionLossSignal? connectionLoss;

    private MoeClusterClient(IClusterClient orleans, IHost? host, ILoggerFactory? loggers, TimeSpan recoveryTimeout, ConnectionLossSignal? connectionLoss = null)
    {
        this.connectionLoss = connectionLoss;
        Orleans = orleans;
        this.host = host;
        this.loggers = loggers ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance;
        this.recoveryTimeout = recoveryTimeout;
    }

    /// <summary>The underlying Orleans client, for calls the SDK does not wrap.</summary>
    public IClusterClient Orleans { get; }

    /// <summary>Connects to the cluster's gateways (localhost ports, or the silos registered in Redis).</summary>
    public static async Task<MoeClusterClient> ConnectAsync(MoeClientOptions options, CancellationToken cancellationToken = default)
    {
        var connectionLoss = new ConnectionLossSignal();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning)
            .AddFilter("Orleans", LogLevel.Error); // a lost silo is reported once, by the layer that recovers from it
        builder.UseOrleansClient(client =>
        {
            var cluster = (options.Cluster ?? "").Trim();
            if (cluster is "" or "localhost")
                client.UseStaticClustering(options.GatewayPorts.Select(p => new IPEndPoint(IPAddress.Loopback, p)).ToArray());
            else if (cluster.StartsWith("redis://", StringComparison.OrdinalIgnoreCase) && cluster.Length > 8)
                client.UseRedisClustering(cluster[8..].TrimEnd('/'));
            else
                throw new ArgumentException($"cluster is '{options.Cluster}'; expected localhost or redis://host:port");
            client.Configure<ClusterOptions>(o => { o.ClusterId = options.ClusterId; o.ServiceId = options.ServiceId; });
            client.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = options.ResponseTimeout);
            client.AddGatewayCountChangedHandler((_, e) =>
            {
                if (e.NumberOfConnectedGateways < e.PreviousNumberOfConnectedGateways) connectionLoss.Signal();
            });
        });
        var host = builder.Build();
        try
        {
            await host.StartAsync(cancellationToken);
        }
        catch
        {
            host.Dispose();
            throw;
        }
        return new MoeClusterClient(host.Services.GetRequiredService<IClusterClient>(), host,
            host.Services.GetRequiredService<ILoggerFactory>(), options.RecoveryTimeout, connectionLoss);
    }

    /// <summary>Wraps a client the caller already has (a co-hosted silo, a test cluster); disposing this does not stop it.</summary>
    public static MoeClusterClient FromClusterClient(IClusterClient client, ILoggerFactory? loggers = null, TimeSpan? recoveryTimeout = null) =>
        new(client, null, loggers, recoveryTimeout ?? new MoeClientOptions().RecoveryTimeout);

    private RemoteMoeLayer Layer(string name, LayerSpec spec) =>
        new(Orleans, name, spec, loggers.CreateLogger<RemoteMoeLayer>(), recoveryTimeout, connectionLoss);

    /// <summary>Creates a layer (or returns it, if it exists with the same spec) and activates its experts.</summary>
    public async Task<RemoteMoeLayer> CreateLayerAsync(string name, LayerSpec spec)
    {
        CheckName(name);
        ArgumentNullException.ThrowIfNull(spec);
        await Orleans.GetGrain<IMoeRouterGrain>(name).Create(spec);
        return Layer(name, spec);
    }

    /// <summary>A layer that exists already; fails if it does not.</summary>
    public async Task<RemoteMoeLayer> GetLayerAsync(string name)
    {
        CheckName(name);
        var spec = await Orleans.GetGrain<IMoeRouterGrain>(name).GetSpec()
            ?? throw new InvalidOperationException($"layer \"{name}\" does not exist; create it first");
        return Layer(name, spec);
    }

    /// <summary>
    /// Plans moves of <paramref name="layer"/>'s experts that even out the tokens routed per silo
    /// since <paramref name="since"/> (a stats snapshot; null: since the layer's start). Changes nothing.
    /// </summary>
    public async Task<Rebalancing.RebalancePlan> PlanRebalanceAsync(RemoteMoeLayer layer, LayerStats? since = null, double targetRatio = 1.05)
    {
        ArgumentNullException.ThrowIfNull(layer);
        return Rebalancing.RebalancePlanner.Plan(await layer.GetStatsAsync(), await GetSlotUsageAsync(), since, targetRatio);
    }

    /// <summary>
    /// Makes the plan's moves, each at one of the layer's step boundaries: a move refused because
    /// a step is under way is tried again until <paramref name="patience"/> runs out.
    /// </summary>
    public async Task<ExpertMove[]> ApplyRebalanceAsync(RemoteMoeLayer layer, Rebalancing.RebalancePlan plan, TimeSpan? patience = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var moves = new List<ExpertMove>();
        foreach (var planned in plan.Moves)
        {
            var deadline = DateTime.UtcNow + (patience ?? TimeSpan.FromSeconds(60));
            while (true)
            {
                try
                {
                    moves.Add(await layer.MoveExpertAsync(planned.Expert, planned.ToSilo));
                    break;
                }
                catch (InvalidOperationException e) when (e.Message.Contains("happens at a step boundary") && DateTime.UtcNow < deadline)
                {
                    await Task.Delay(5);
                }
            }
        }
        return moves.ToArray();
    }

    /// <summary>Every live silo's device slots and their leases.</summary>
    public Task<SlotUsage[]> GetSlotUsageAsync() => Orleans.GetGrain<IMoeClusterGrain>(0).GetSlotUsage();

    private static void CheckName(string name)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Contains('/'))
            throw new ArgumentException($"layer name '{name}' is not valid; expected a non-empty name without '/'", nameof(name));
    }

    public async ValueTask DisposeAsync()
    {
        if (host is null) return;
        await host.StopAsync();
        host.Dispose();
    }
}
