using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MoeCluster.Hosting.Security;
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
    private readonly LayerInputGuard guard;

    private MoeClusterClient(IClusterClient orleans, IHost? host, ILoggerFactory? loggers, TimeSpan recoveryTimeout,
        ConnectionLossSignal? connectionLoss = null, bool validateInputs = true)
    {
        this.connectionLoss = connectionLoss;
        // The client's own message limit; the silos use Orleans' default unless configured alike.
        var limit = orleans.ServiceProvider.GetService<IOptions<ClientMessagingOptions>>()?.Value.MaxMessageBodySize
            ?? LayerInputGuard.OrleansDefaultMaxMessageBytes;
        guard = new LayerInputGuard(validateInputs, limit);
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
        // Warnings go to stderr: a program's stdout is its own (the CLI's --json output, for one).
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace)
            .AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning)
            .AddFilter("Orleans", LogLevel.Error) // a lost silo is reported once, by the layer that recovers from it
            .AddFilter("Microsoft.Extensions.Hosting", LogLevel.None); // a failed start is the exception ConnectAsync throws
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
            if (options.TlsCertificate is not null || options.TlsAuthority is not null)
            {
                var authority = options.TlsAuthority is { } ca ? TlsCertificates.LoadAuthority(ca) : null;
                if (options.TlsCertificate is { } path) client.UseTls(TlsCertificates.LoadCertificate(path), o => TlsCertificates.Configure(o, authority));
                else client.UseTls(o => TlsCertificates.Configure(o, authority, hasCertificate: false));
            }
            // Orleans retries a refused first connection forever; a user wants to hear why, soon.
            var deadline = DateTime.UtcNow + options.ConnectTimeout;
            client.UseConnectionRetryFilter(async (_, cancel) =>
            {
                if (DateTime.UtcNow >= deadline) return false;
                await Task.Delay(TimeSpan.FromMilliseconds(500), cancel);
                return true;
            });
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
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            host.Dispose();
            var cause = e;
            while (cause.InnerException is not null) cause = cause.InnerException;
            var why = cause == e ? e.Message : $"{e.Message.Split("  ")[0]} ({cause.Message})";
            throw new InvalidOperationException(
                $"cannot connect to the cluster ({options.Cluster}, id {options.ClusterId}) within {options.ConnectTimeout.TotalSeconds:0.#} s: {why}", e);
        }
        catch
        {
            host.Dispose();
            throw;
        }
        return new MoeClusterClient(host.Services.GetRequiredService<IClusterClient>(), host,
            host.Services.GetRequiredService<ILoggerFactory>(), options.RecoveryTimeout, connectionLoss, options.ValidateInputs);
    }

    /// <summary>Wraps a client the caller already has (a co-hosted silo, a test cluster); disposing this does not stop it.</summary>
    public static MoeClusterClient FromClusterClient(IClusterClient client, ILoggerFactory? loggers = null, TimeSpan? recoveryTimeout = null,
        bool validateInputs = true) =>
        new(client, null, loggers, recoveryTimeout ?? new MoeClientOptions().RecoveryTimeout, validateInputs: validateInputs);

    /// <summary>Whether layers check that x and ∂L/∂y hold only finite numbers before sending them (<see cref="MoeClientOptions.ValidateInputs"/>).</summary>
    public bool ValidatesInputs => guard.ValidateValues;

    /// <summary>The largest message this client sends (Orleans' MaxMessageBodySize); a bigger micro-batch is refused before it is sent.</summary>
    public long MaxMessageBytes => guard.MaxMessageBytes;

    private RemoteMoeLayer Layer(string name, LayerSpec spec) =>
        new(Orleans, name, spec, loggers.CreateLogger<RemoteMoeLayer>(), recoveryTimeout, connectionLoss, guard);

    /// <summary>Creates a layer (or returns it, if it exists with the same spec) and activates its experts.</summary>
    public async Task<RemoteMoeLayer> CreateLayerAsync(string name, LayerSpec spec)
    {
        CheckName(name);
        ArgumentNullException.ThrowIfNull(spec);
        // Through the gateway grain, as training calls go: the router is placed beside it.
        await Orleans.GetGrain<IMoeLayerGateway>(name).Create(spec);
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

    /// <summary>The names of the cluster's layers (from its layer catalog), in ordinal order.</summary>
    public Task<string[]> ListLayersAsync() => Orleans.GetGrain<ILayerCatalogGrain>(0).List();

    /// <summary>The checkpoint versions the store holds for a layer's router and each of its experts.</summary>
    public Task<CheckpointVersions[]> ListCheckpointsAsync(string layer)
    {
        CheckName(layer);
        return Orleans.GetGrain<ICheckpointInventoryGrain>(0).List(layer);
    }

    /// <summary>
    /// Plans moves of <paramref name="layer"/>'s experts that even out the load per silo: tokens
    /// routed, or compute time (<paramref name="measure"/>), since <paramref name="since"/> (a stats
    /// snapshot), or with no snapshot as the experts' moving averages per step. Changes nothing.
    /// </summary>
    public async Task<Rebalancing.RebalancePlan> PlanRebalanceAsync(RemoteMoeLayer layer, LayerStats? since = null, double targetRatio = 1.05,
        Rebalancing.RebalanceMeasure measure = Rebalancing.RebalanceMeasure.Tokens)
    {
        ArgumentNullException.ThrowIfNull(layer);
        return Rebalancing.RebalancePlanner.Plan(await layer.GetStatsAsync(), await GetSlotUsageAsync(), since, targetRatio, measure: measure);
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
