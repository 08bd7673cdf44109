using System.CommandLine;
using Microsoft.Extensions.Hosting;
using MoeCluster.Hosting;

namespace MoeCluster.Silo;

/// <summary>The options of <c>./moe silo</c>, mapped onto <see cref="MoeSiloOptions"/>.</summary>
public static class SiloCommand
{
    public static RootCommand Create()
    {
        // appsettings.json and MOE_Silo__* variables set the defaults that the command line overrides.
        MoeSiloOptions defaults;
        string? configurationError = null;
        try
        {
            defaults = SiloConfiguration.Load();
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or IOException)
        {
            (defaults, configurationError) = (new MoeSiloOptions(), e.Message);
        }
        var cluster = new Option<string>("--cluster") { Description = "Membership: localhost, or redis://host:port", DefaultValueFactory = _ => defaults.Cluster };
        var port = new Option<int>("--port") { Description = "Silo-to-silo port", DefaultValueFactory = _ => defaults.SiloPort };
        var gateway = new Option<int>("--gateway-port") { Description = "Port clients connect to", DefaultValueFactory = _ => defaults.GatewayPort };
        var primary = new Option<int>("--primary-port") { Description = "With localhost membership: the silo port of the silo the others join", DefaultValueFactory = _ => defaults.PrimarySiloPort };
        var devices = new Option<string>("--devices") { Description = "auto, cpu, or cuda:0,cuda:1,...", DefaultValueFactory = _ => defaults.Devices };
        var perDevice = new Option<int>("--experts-per-device") { Description = "Expert slots per device", DefaultValueFactory = _ => defaults.ExpertsPerDevice };
        var overcommit = new Option<bool>("--overcommit") { Description = "Accept experts beyond the slots instead of refusing them", DefaultValueFactory = _ => defaults.AllowOvercommit };
        var clusterId = new Option<string>("--cluster-id") { Description = "Orleans cluster id (silos and clients must agree)", DefaultValueFactory = _ => defaults.ClusterId };
        var threads = new Option<int>("--threads") { Description = "libtorch intra-op threads (0 = one per core)", DefaultValueFactory = _ => defaults.TorchThreads };
        var expertWorkers = new Option<int>("--expert-workers") { Description = "CPU experts computing at once, sharing the threads (0 or 1 = one at a time)", DefaultValueFactory = _ => defaults.ExpertWorkers };
        var store = new Option<string>("--store") { Description = "Checkpoints: a directory shared by the cluster's silos, or redis://host:port", DefaultValueFactory = _ => defaults.Store };
        var name = new Option<string>("--name") { Description = "Silo name in logs", DefaultValueFactory = _ => defaults.SiloName };
        var tlsCert = new Option<string?>("--tls-cert") { Description = "TLS for silo and client traffic: PEM file with this silo's certificate and private key (or a .pfx)", DefaultValueFactory = _ => defaults.TlsCertificate };
        var tlsCa = new Option<string?>("--tls-ca") { Description = "With --tls-cert: the cluster's CA certificate (PEM); silos and clients must present a certificate it issued", DefaultValueFactory = _ => defaults.TlsAuthority };
        var statusPort = new Option<int>("--status-port") { Description = "Port of the status page (MoE page at /, Orleans Dashboard at /dashboard/); 0: none", DefaultValueFactory = _ => defaults.StatusPort };
        var address = new Option<string>("--address") { Description = "With Redis membership: the IP address other machines reach this silo at (default loopback: one machine)", DefaultValueFactory = _ => defaults.Address };
        var statusHost = new Option<string>("--status-host") { Description = "Address the status page listens on (0.0.0.0: every interface)", DefaultValueFactory = _ => defaults.StatusHost };
        var statusToken = new Option<string?>("--status-token") { Description = "Require this token on the status page (Authorization: Bearer TOKEN, or ?token=TOKEN once in a browser); none by default", DefaultValueFactory = _ => defaults.StatusToken };
        var otlp = new Option<string?>("--otlp-endpoint") { Description = "Export metrics to this OTLP collector, e.g. http://localhost:4317; none by default", DefaultValueFactory = _ => defaults.OtlpEndpoint };
        var otlpProtocol = new Option<string>("--otlp-protocol") { Description = "grpc (collector port 4317) or http (protobuf over HTTP, port 4318, path /v1/metrics)", DefaultValueFactory = _ => defaults.OtlpProtocol };
        var otlpInterval = new Option<double>("--otlp-interval") { Description = "Seconds between two OTLP exports", DefaultValueFactory = _ => defaults.OtlpIntervalSeconds };
        var prometheus = new Option<int>("--prometheus-port") { Description = "Serve metrics for Prometheus at http://localhost:PORT/metrics; 0: none", DefaultValueFactory = _ => defaults.PrometheusPort };

        var command = new RootCommand("Runs one MoeCluster silo: it hosts experts on its device slots until Ctrl+C.\n\n" +
            "Example (two silos on one machine, then the demo against them):\n" +
            "  ./moe silo --port 11111 --gateway-port 30000\n" +
            "  ./moe silo --port 11112 --gateway-port 30001 --primary-port 11111\n" +
            "With mutual TLS: ./moe silo --tls-cert silo.pem --tls-ca ca.pem\n" +
            "Every option can also be set in appsettings.json (section \"Silo\", e.g. \"GatewayPort\": 30001) or as an\n" +
            "environment variable (MOE_Silo__GatewayPort=30001); the command line wins. See docs/configuration.md.")
        {
            cluster, port, gateway, primary, devices, perDevice, overcommit, clusterId, threads, expertWorkers, store, name,
            statusPort, statusHost, statusToken, otlp, otlpProtocol, otlpInterval, prometheus, tlsCert, tlsCa, address,
        };
        command.SetAction(async (parse, cancel) =>
        {
            if (configurationError is not null)
            {
                Console.Error.WriteLine($"moe silo: the configuration is not valid: {configurationError}");
                return 2;
            }
            var options = defaults with // keeps what only the configuration sets (ServiceId)
            {
                Cluster = parse.GetValue(cluster)!,
                SiloPort = parse.GetValue(port),
                GatewayPort = parse.GetValue(gateway),
                PrimarySiloPort = parse.GetValue(primary),
                Devices = parse.GetValue(devices)!,
                ExpertsPerDevice = parse.GetValue(perDevice),
                AllowOvercommit = parse.GetValue(overcommit),
                ClusterId = parse.GetValue(clusterId)!,
                TorchThreads = parse.GetValue(threads),
                ExpertWorkers = parse.GetValue(expertWorkers),
                SiloName = parse.GetValue(name)!,
                Store = parse.GetValue(store)!,
                TlsCertificate = parse.GetValue(tlsCert),
                TlsAuthority = parse.GetValue(tlsCa),
                StatusPort = parse.GetValue(statusPort),
                StatusHost = parse.GetValue(statusHost)!,
                StatusToken = parse.GetValue(statusToken),
                Address = parse.GetValue(address)!,
                OtlpEndpoint = parse.GetValue(otlp),
                OtlpProtocol = parse.GetValue(otlpProtocol)!,
                OtlpIntervalSeconds = parse.GetValue(otlpInterval),
                PrometheusPort = parse.GetValue(prometheus),
            };
            try
            {
                ClusterAddress.Parse(options.Cluster);
                var slots = DeviceInventory.Resolve(options.Devices, options.ExpertsPerDevice);
                using var host = MoeSiloHost.Build(options);
                await host.StartAsync(cancel);
                Console.WriteLine($"moe silo {options.SiloName}: silo port {options.SiloPort}, gateway {options.GatewayPort}, " +
                    $"cluster {options.Cluster}, slots {string.Join(", ", slots.Select(s => $"{s.Device}×{s.Capacity}"))}, store {options.Store}" +
                    (options.StatusPort > 0 ? $", status page http://{options.StatusHost}:{options.StatusPort}/" : "") +
                    (options.PrometheusPort > 0 ? $", metrics http://localhost:{options.PrometheusPort}/metrics" : "") + "; Ctrl+C stops it");
                await host.WaitForShutdownAsync(CancellationToken.None);
                return 0;
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"moe silo: {e.Message}");
                return 2;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // Membership or checkpoint store out of reach, a port taken: one line, not a stack trace.
                var message = e is StackExchange.Redis.RedisConnectionException
                    ? $"cannot reach the membership Redis ({options.Cluster}): {e.Message}"
                    : e.Message;
                Console.Error.WriteLine($"moe silo: cannot start: {message}");
                return 1;
            }
        });
        return command;
    }
}
