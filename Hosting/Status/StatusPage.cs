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
        if (options.StatusToken is { } token && string.IsNullOrWhiteSpace(token))
            throw new ArgumentException("--status-token is empty; expected a secret of at least one non-blank character, or no option at all");
        builder.WebHost.ConfigureKestrel(k => k.Listen(address, options.StatusPort));
        builder.Services.AddSingleton<StatusSnapshotSource>();
    }

    public static void Map(WebApplication app, string? token = null)
    {
        if (token is not null) app.Use(RequireToken(token));
        app.MapOrleansDashboard(routePrefix: "/dashboard");
        app.MapGet("/", () => Results.Content(Html.Value, "text/html; charset=utf-8"));
        app.MapGet("/api/moe", async (StatusSnapshotSource source) => Results.Json(await source.TakeAsync(), Json));
    }

    private const string Cookie = "moe-status-token";

    /// <summary>
    /// Lets a request through when it carries the token: as a bearer token, as <c>?token=</c> (which
    /// also sets a cookie, so the page's own requests and the dashboard's carry it), or as that cookie.
    /// Compared in constant time; anything else gets 401.
    /// </summary>
    private static Func<HttpContext, RequestDelegate, Task> RequireToken(string token)
    {
        var expected = System.Text.Encoding.UTF8.GetBytes(token);
        bool Matches(string? given) => given is not null &&
            System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(System.Text.Encoding.UTF8.GetBytes(given), expected);
        return async (context, next) =>
        {
            var request = context.Request;
            var header = request.Headers.Authorization.ToString();
            var bearer = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header[7..].Trim() : null;
            var query = request.Query["token"].FirstOrDefault();
            if (Matches(bearer) || Matches(request.Cookies[Cookie]))
            {
                await next(context);
                return;
            }
            if (Matches(query))
            {
                context.Response.Cookies.Append(Cookie, token, new CookieOptions { HttpOnly = true, SameSite = SameSiteMode.Strict, Path = "/" });
                await next(context);
                return;
            }
            context.Response.StatusCode = StatusCodes.Status401Unauthorized;
            context.Response.Headers.WWWAuthenticate = "Bearer realm=\"moe status\"";
            await context.Response.WriteAsync("this status page needs its token: Authorization: Bearer TOKEN, or ?token=TOKEN\n");
        };
    }

    private static readonly Lazy<string> Html = new(() =>
    {
        using var stream = typeof(StatusPage).Assembly.GetManifestResourceStream("MoeCluster.Status.html")
            ?? throw new InvalidOperationException("the status page's HTML is not embedded in MoeCluster.Hosting; expected resource MoeCluster.Status.html");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    });
}
