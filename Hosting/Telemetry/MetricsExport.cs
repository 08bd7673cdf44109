using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using MoeCluster.Grains.Telemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace MoeCluster.Hosting.Telemetry;

/// <summary>
/// OpenTelemetry export of the meters <c>MoeCluster</c> and Orleans' own, to an OTLP collector
/// and/or a Prometheus scrape endpoint. Both are off unless their option is set, so a silo that
/// does not ask pays nothing for them.
/// </summary>
public static class MetricsExport
{
    public static void AddTo(IHostApplicationBuilder builder, MoeSiloOptions options)
    {
        if (options.OtlpEndpoint is null && options.PrometheusPort <= 0) return;
        var otlp = options.OtlpEndpoint is { } endpoint ? ParseOtlp(endpoint, options.OtlpProtocol) : null;
        var protocol = options.OtlpProtocol == "http" ? OtlpExportProtocol.HttpProtobuf : OtlpExportProtocol.Grpc;
        if (!(options.OtlpIntervalSeconds is >= 0.1 and <= 86400))
            throw new ArgumentException($"--otlp-interval is {options.OtlpIntervalSeconds}; expected seconds between 0.1 and 86400");
        var interval = (int)Math.Round(options.OtlpIntervalSeconds * 1000);
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("moecluster-silo", serviceInstanceId: options.SiloName))
            .WithMetrics(metrics =>
            {
                metrics.AddMeter(MoeMetrics.MeterName, "Microsoft.Orleans");
                if (otlp is not null)
                    metrics.AddOtlpExporter((exporter, reader) =>
                    {
                        exporter.Endpoint = otlp;
                        exporter.Protocol = protocol;
                        reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = interval;
                    });
                if (options.PrometheusPort > 0)
                    metrics.AddPrometheusHttpListener(o => { o.Host = "localhost"; o.Port = options.PrometheusPort; });
            });
    }

    /// <summary>
    /// The collector's URL. Over HTTP, OpenTelemetry posts to an endpoint set in code as it is, so a
    /// bare <c>http://host:4318</c> gets the metrics path <c>/v1/metrics</c> here; a URL with a path keeps it.
    /// </summary>
    private static Uri ParseOtlp(string endpoint, string protocol)
    {
        if (protocol is not ("grpc" or "http"))
            throw new ArgumentException($"--otlp-protocol is '{protocol}'; expected grpc or http");
        if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw new ArgumentException($"--otlp-endpoint is '{endpoint}'; expected an http:// or https:// URL such as http://localhost:4317");
        return protocol == "http" && uri.AbsolutePath == "/" ? new Uri(uri, "v1/metrics") : uri;
    }
}
