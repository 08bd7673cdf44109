using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using MoeCluster.Grains.Telemetry;
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
        var otlp = options.OtlpEndpoint is { } endpoint ? ParseOtlp(endpoint) : null;
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("moecluster-silo", serviceInstanceId: options.SiloName))
            .WithMetrics(metrics =>
            {
                metrics.AddMeter(MoeMetrics.MeterName, "Microsoft.Orleans");
                if (otlp is not null) metrics.AddOtlpExporter(o => o.Endpoint = otlp);
                if (options.PrometheusPort > 0)
                    metrics.AddPrometheusHttpListener(o => { o.Host = "localhost"; o.Port = options.PrometheusPort; });
            });
    }

    private static Uri ParseOtlp(string endpoint) =>
        Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
            ? uri
            : throw new ArgumentException($"--otlp-endpoint is '{endpoint}'; expected an http:// or https:// URL such as http://localhost:4317");
}
