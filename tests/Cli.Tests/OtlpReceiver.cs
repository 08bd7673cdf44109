using System.Collections.Concurrent;
using System.Net;
using System.Text;

namespace MoeCluster.Cli.Tests;

/// <summary>
/// A tiny OTLP/HTTP collector: accepts <c>POST /v1/metrics</c> (an ExportMetricsServiceRequest in
/// protobuf), keeps each body and answers 200 with an empty response. Instrument names, tag values
/// and the service name are length-delimited strings in protobuf, so they appear in a body as plain
/// bytes and a test can look for them without decoding it.
/// </summary>
public sealed class OtlpReceiver : IAsyncDisposable
{
    private readonly HttpListener listener = new();
    private readonly ConcurrentQueue<(string Path, string ContentType, byte[] Body)> requests = new();
    private readonly Task loop;
    // The request being read, aborted when the receiver stops: HttpListener's Close does not
    // always end a body read that is waiting for bytes (one CI run waited on it for good).
    private volatile HttpListenerContext? current;

    public OtlpReceiver(int port)
    {
        Port = port;
        listener.Prefixes.Add($"http://127.0.0.1:{port}/");
        listener.Start();
        loop = Task.Run(ServeAsync);
    }

    public int Port { get; }
    public string Endpoint => $"http://127.0.0.1:{Port}";
    public IReadOnlyCollection<(string Path, string ContentType, byte[] Body)> Requests => requests;

    /// <summary>Whether one request to <c>/v1/metrics</c> carries every one of <paramref name="strings"/>.</summary>
    public bool AnyMetricsRequestContains(params string[] strings) =>
        requests.Any(r => r.Path == "/v1/metrics" && strings.All(s => r.Body.AsSpan().IndexOf(Encoding.UTF8.GetBytes(s)) >= 0));

    private async Task ServeAsync()
    {
        while (listener.IsListening)
        {
            HttpListenerContext context;
            try { context = await listener.GetContextAsync(); }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { return; }
            current = context;
            if (!listener.IsListening) context.Response.Abort(); // stopped while this request was being accepted
            try
            {
                using var body = new MemoryStream();
                await context.Request.InputStream.CopyToAsync(body);
                var path = context.Request.Url!.AbsolutePath;
                requests.Enqueue((path, context.Request.ContentType ?? "", body.ToArray()));
                context.Response.StatusCode = context.Request.HttpMethod == "POST" && path == "/v1/metrics" ? 200 : 404;
                context.Response.ContentType = "application/x-protobuf";
                context.Response.ContentLength64 = 0;
                context.Response.Close();
            }
            catch (Exception e) when (IsStopOrHangUp(e))
            {
                // The receiver stopped (a test ending while a silo still exports) or the exporter
                // went away mid-request: that request is lost, which is what a collector does.
                context.Response.Abort();
            }
            finally
            {
                current = null;
            }
        }
    }

    private static bool IsStopOrHangUp(Exception e) => e is HttpListenerException or ObjectDisposedException or InvalidOperationException or IOException;

    public async ValueTask DisposeAsync()
    {
        listener.Stop();
        try { current?.Response.Abort(); } catch (ObjectDisposedException) { } // its connection closes, so its read ends
        listener.Close();
        await loop.WaitAsync(TimeSpan.FromSeconds(30)); // a receiver that cannot stop fails its test rather than hanging the suite
    }
}
