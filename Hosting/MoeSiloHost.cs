using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MoeCluster.Hosting.Security;
using MoeCluster.Hosting.Status;
using MoeCluster.Hosting.Telemetry;
using Orleans.Configuration;
using Orleans.Dashboard;

namespace MoeCluster.Hosting;

/// <summary>A whole MoeCluster silo as a generic host: clustering, ports and <see cref="MoeSiloBuilderExtensions.AddMoeCluster"/>.</summary>
public static class MoeSiloHost
{
    public static IHost Build(MoeSiloOptions options, Action<ILoggingBuilder>? logging = null)
    {
        if (options.StatusPort <= 0)
        {
            var builder = Host.CreateApplicationBuilder();
            Configure(builder, options, logging, statusPage: false);
            return builder.Build();
        }
        // The status page needs ASP.NET Core; a silo without one does not start a web server.
        var web = WebApplication.CreateSlimBuilder();
        Configure(web, options, logging, statusPage: true);
        StatusPage.Configure(web, options);
        var app = web.Build();
        StatusPage.Map(app, options.StatusToken);
        return app;
    }

    private static void Configure(IHostApplicationBuilder builder, MoeSiloOptions options, Action<ILoggingBuilder>? logging, bool statusPage)
    {
        builder.Logging.ClearProviders();
        if (logging is not null) logging(builder.Logging);
        else builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss "; })
            .AddFilter("Orleans", LogLevel.Warning).AddFilter("Microsoft", LogLevel.Warning).AddFilter("Polly", LogLevel.Warning);
        builder.UseOrleans(silo =>
        {
            ConfigureClustering(silo, options);
            silo.Configure<ClusterOptions>(o => { o.ClusterId = options.ClusterId; o.ServiceId = options.ServiceId; });
            silo.Configure<SiloOptions>(o => o.SiloName = options.SiloName);
            silo.Configure<ClusterMembershipOptions>(FailureDetection.Configure);
            ConfigureTls(silo, options);
            silo.AddMoeCluster(options);
            if (statusPage) silo.AddDashboard();
            // Every silo counts its recoveries and migrations from its start and tells any status page that asks.
            silo.AddGrainService<MetricTotalsService>();
        });
        builder.Services.AddSingleton<LocalMetricTotals>();
        builder.Services.AddSingleton<IMetricTotalsClient, MetricTotalsClient>();
        MetricsExport.AddTo(builder, options);
    }

    private static void ConfigureTls(ISiloBuilder silo, MoeSiloOptions options)
    {
        if (options.TlsCertificate is null)
        {
            if (options.TlsAuthority is not null) throw new ArgumentException("--tls-ca needs --tls-cert: a silo that checks its peers' certificates must present its own");
            return;
        }
        var certificate = TlsCertificates.LoadCertificate(options.TlsCertificate);
        var authority = options.TlsAuthority is { } ca ? TlsCertificates.LoadAuthority(ca) : null;
        silo.UseTls(certificate, o => TlsCertificates.Configure(o, authority));
    }

    private static void ConfigureClustering(ISiloBuilder silo, MoeSiloOptions options)
    {
        var cluster = ClusterAddress.Parse(options.Cluster);
        if (cluster.RedisConnection is { } redis)
        {
            silo.UseRedisClustering(redis);
            if (!IPAddress.TryParse(options.Address, out var address))
                throw new ArgumentException($"--address is '{options.Address}'; expected the IP address other machines reach this silo at");
            silo.ConfigureEndpoints(address, options.SiloPort, options.GatewayPort, listenOnAnyHostAddress: !IPAddress.IsLoopback(address));
        }
        else
        {
            silo.UseLocalhostClustering(options.SiloPort, options.GatewayPort,
                new IPEndPoint(IPAddress.Loopback, options.PrimarySiloPort), options.ServiceId, options.ClusterId);
        }
    }
}

/// <summary>
/// Orleans' failure detection, tuned so that a silo killed on loopback is declared dead within a
/// few seconds instead of about a minute: the layers recover only once its grains can come back
/// elsewhere. Probes every second, 2 s to answer, dead after 2 missed probes; other silos learn
/// of it at their next membership read (every 2 s) or at once by gossip.
/// </summary>
public static class FailureDetection
{
    public static void Configure(ClusterMembershipOptions o)
    {
        o.ProbeTimeout = TimeSpan.FromSeconds(2);
        o.NumMissedProbesLimit = 2;
        o.TableRefreshTimeout = TimeSpan.FromSeconds(2);
        o.IAmAliveTablePublishTimeout = TimeSpan.FromSeconds(5);
        o.DeathVoteExpirationTimeout = TimeSpan.FromSeconds(30);
    }
}

/// <summary><c>localhost</c> or <c>redis://host:port</c>, as the silo and the SDK both accept it.</summary>
public sealed record ClusterAddress(string? RedisConnection)
{
    public static ClusterAddress Parse(string cluster)
    {
        var c = (cluster ?? "").Trim();
        if (c is "" or "localhost") return new ClusterAddress((string?)null);
        if (c.StartsWith("redis://", StringComparison.OrdinalIgnoreCase) && c.Length > "redis://".Length)
            return new ClusterAddress(c["redis://".Length..].TrimEnd('/'));
        throw new ArgumentException($"--cluster is '{cluster}'; expected localhost or redis://host:port");
    }
}
