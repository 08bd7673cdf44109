using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MoeCluster.Cli.Tests;

/// <summary>
/// Debian's <c>chromium</c>, headless, driven over the DevTools protocol (one page, one WebSocket):
/// navigate, evaluate JavaScript, take screenshots. Playwright would need a browser download of
/// its own; this needs only the browser that <c>./moe test</c>'s bootstrap installs.
/// </summary>
public sealed class HeadlessChromium : IAsyncDisposable
{
    private readonly Process process;
    private readonly string profile;
    private readonly ClientWebSocket socket = new();
    private readonly ConcurrentDictionary<int, TaskCompletionSource<JsonNode>> waiting = new();
    private readonly CancellationTokenSource closing = new();
    private Task? receiving;
    private int nextId;

    private HeadlessChromium(Process process, string profile)
    {
        this.process = process;
        this.profile = profile;
    }

    public static string Binary => new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser" }.FirstOrDefault(File.Exists)
        ?? throw new InvalidOperationException("chromium is not installed; ./moe test installs it (scripts/bootstrap.sh chromium), or apt-get install chromium");

    public static async Task<HeadlessChromium> StartAsync()
    {
        var profile = Directory.CreateTempSubdirectory("moe-chromium-").FullName;
        var start = new ProcessStartInfo(Binary)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--remote-debugging-port=0", "--remote-allow-origins=*", $"--user-data-dir={profile}", "--window-size=1280,900", "about:blank" })
            start.ArgumentList.Add(a);
        var process = Process.Start(start)!;
        var browser = new HeadlessChromium(process, profile);
        try
        {
            // It prints "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" once ready.
            var endpoint = await ReadDevToolsEndpoint(process).WaitAsync(TimeSpan.FromSeconds(60));
            var http = new Uri(endpoint.Replace("ws://", "http://")).GetLeftPart(UriPartial.Authority);
            using var client = new HttpClient();
            var targets = JsonNode.Parse(await client.GetStringAsync($"{http}/json/list"))!.AsArray();
            var page = targets.First(t => (string?)t!["type"] == "page")!["webSocketDebuggerUrl"]!.GetValue<string>();
            await browser.socket.ConnectAsync(new Uri(page), CancellationToken.None);
            browser.receiving = browser.Receive();
            await browser.Send("Page.enable");
            return browser;
        }
        catch
        {
            await browser.DisposeAsync();
            throw;
        }
    }

    private static async Task<string> ReadDevToolsEndpoint(Process process)
    {
        while (await process.StandardError.ReadLineAsync() is { } line)
            if (line.StartsWith("DevTools listening on ", StringComparison.Ordinal))
            {
                _ = process.StandardError.ReadToEndAsync(); // keep draining, or chromium blocks on a full pipe
                return line["DevTools listening on ".Length..].Trim();
            }
        throw new InvalidOperationException($"chromium exited with {process.ExitCode} before it opened its DevTools endpoint");
    }

    public async Task<JsonNode> Send(string method, object? parameters = null)
    {
        var id = Interlocked.Increment(ref nextId);
        var answer = new TaskCompletionSource<JsonNode>(TaskCreationOptions.RunContinuationsAsynchronously);
        waiting[id] = answer;
        var message = JsonSerializer.SerializeToUtf8Bytes(new { id, method, @params = parameters ?? new { } });
        await socket.SendAsync(message, WebSocketMessageType.Text, true, CancellationToken.None);
        var reply = await answer.Task.WaitAsync(TimeSpan.FromSeconds(60));
        if (reply["error"] is { } error) throw new InvalidOperationException($"{method} failed: {error.ToJsonString()}");
        return reply["result"]!;
    }

    private async Task Receive()
    {
        var buffer = new byte[1 << 16];
        var message = new MemoryStream();
        while (!closing.IsCancellationRequested && socket.State == WebSocketState.Open)
        {
            WebSocketReceiveResult result;
            try { result = await socket.ReceiveAsync(buffer, closing.Token); }
            catch (Exception) { break; }
            message.Write(buffer, 0, result.Count);
            if (!result.EndOfMessage) continue;
            var node = JsonNode.Parse(Encoding.UTF8.GetString(message.GetBuffer(), 0, (int)message.Length));
            message.SetLength(0);
            // Events (no id) are not needed: the tests poll the page's state.
            if (node?["id"] is { } id && waiting.TryRemove(id.GetValue<int>(), out var answer)) answer.SetResult(node);
        }
        foreach (var pending in waiting.Values) pending.TrySetException(new InvalidOperationException("the DevTools connection closed"));
    }

    public Task Navigate(string url) => Send("Page.navigate", new { url });

    /// <summary>The value of a JavaScript expression in the page (JSON-serialisable values only).</summary>
    public async Task<JsonNode?> Evaluate(string expression)
    {
        var result = await Send("Runtime.evaluate", new { expression, returnByValue = true, awaitPromise = true });
        if (result["exceptionDetails"] is { } thrown) throw new InvalidOperationException($"`{expression}` threw: {thrown.ToJsonString()}");
        return result["result"]?["value"];
    }

    /// <summary>Polls <paramref name="expression"/> until it is true; fails after <paramref name="timeout"/> with <paramref name="what"/>.</summary>
    public async Task WaitFor(string expression, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            try
            {
                if (await Evaluate(expression) is JsonValue v && v.TryGetValue<bool>(out var b) && b) return;
            }
            catch (InvalidOperationException) when (DateTime.UtcNow < deadline)
            {
                // The page is between documents (navigating); ask again.
            }
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"{what} did not happen within {timeout}");
            await Task.Delay(200);
        }
    }

    public async Task Screenshot(string path)
    {
        var shot = await Send("Page.captureScreenshot", new { format = "png" });
        await File.WriteAllBytesAsync(path, Convert.FromBase64String(shot["data"]!.GetValue<string>()));
    }

    public async ValueTask DisposeAsync()
    {
        closing.Cancel();
        try { if (!process.HasExited) process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        await process.WaitForExitAsync();
        if (receiving is not null) await receiving;
        socket.Dispose();
        process.Dispose();
        try { Directory.Delete(profile, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
