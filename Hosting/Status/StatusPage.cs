using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Dashboard;

namespace MoeCluster.Hosting.Status;

/// <summary>
/// The silo's status page: the MoE page at <c>/</c> (its data at <c>/api/moe</c>) and the Orleans
/// Dashboard under <c>/dashboard/</c>, on <see cref="MoeSiloOptions.StatusPort"/>, bound to
/// <see cref="MoeSiloOptions.StatusHost"/> (loopback unless asked).
/// </summary>
public static class StatusPage
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public static void Configure(WebApplicationBuilder builder, MoeSiloOptions options)
    {
        var address = options.StatusHost is "localhost" ? IPAddress.Loopback
            : IPAddress.TryParse(options.StatusHost, out var parsed) ? parsed
            : throw new ArgumentException($"--status-host is '{options.StatusHost}'; expected an IP address such as 127.0.0.1 or 0.0.0.0");
        builder.WebHost.ConfigureKestrel(k => k.Listen(address, options.StatusPort));
        builder.Services.AddSingleton<StatusSnapshotSource>();
    }

    public static void Map(WebApplication app)
    {
        app.MapOrleansDashboard(routePrefix: "/dashboard");
        app.MapGet("/", () => Results.Content(Html.Value, "text/html; charset=utf-8"));
        app.MapGet("/api/moe", async (StatusSnapshotSource source) => Results.Json(await source.TakeAsync(), Json));
    }

    private static readonly Lazy<string> Html = new(() =>
    {
        using var stream = typeof(StatusPage).Assembly.GetManifestResourceStream("MoeCluster.Status.html")
            ?? throw new InvalidOperationException("the status page's HTML is not embedded in MoeCluster.Hosting; expected resource MoeCluster.Status.html");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    });
}
