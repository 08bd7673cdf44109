using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using Xunit;
using MoeCluster.Hosting;

namespace MoeCluster.Cli.Tests;

/// <summary>The status page listens on loopback only by default, and with <c>--status-token</c> lets in only requests that carry the token.</summary>
public class StatusTokenTests
{
    [Fact]
    public async Task An_empty_token_is_refused_before_the_silo_starts()
    {
        var ports = LoopbackPorts.Free(3);
        var (exit, _, stderr) = await MoeProcess.RunAsync(MoeProcess.SiloDll,
            $"--port {ports[0]} --primary-port {ports[0]} --gateway-port {ports[1]} --status-port {ports[2]} --devices cpu --status-token \"\"",
            TimeSpan.FromMinutes(1));
        Assert.Equal(2, exit);
        Assert.Equal("moe silo: --status-token is empty; expected a secret of at least one non-blank character, or no option at all", stderr.Trim());
    }

    [Fact]
    public async Task Without_the_token_401_with_it_200_and_only_on_loopback()
    {
        var ports = LoopbackPorts.Free(3);
        var store = Directory.CreateTempSubdirectory("moe-status-token-").FullName;
        const string token = "s3cret-token";
        var start = new ProcessStartInfo("dotnet",
            $"\"{MoeProcess.SiloDll}\" --port {ports[0]} --primary-port {ports[0]} --gateway-port {ports[1]} --status-port {ports[2]} " +
            $"--devices cpu --experts-per-device 1 --cluster-id status-token --store {store}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.Environment["MOE_Silo__StatusToken"] = token; // the configuration's key; --status-token does the same
        using var silo = Process.Start(start)!;
        var log = new StringBuilder();
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        silo.OutputDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); if (e.Data?.StartsWith("moe silo ") == true) ready.TrySetResult(); };
        silo.ErrorDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); };
        silo.BeginOutputReadLine();
        silo.BeginErrorReadLine();
        try
        {
            var started = await Task.WhenAny(ready.Task, silo.WaitForExitAsync(), Task.Delay(TimeSpan.FromSeconds(90)));
            Assert.True(started == ready.Task, $"the silo did not start:\n{log}");
            var page = $"http://127.0.0.1:{ports[2]}";
            using var http = new HttpClient(new HttpClientHandler { UseCookies = false });

            foreach (var path in new[] { "/", "/api/moe", "/dashboard/" })
            {
                using var refused = await http.GetAsync(page + path);
                Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
                Assert.Equal("Bearer", refused.Headers.WwwAuthenticate.Single().Scheme);
            }
            using (var wrong = new HttpRequestMessage(HttpMethod.Get, page + "/api/moe"))
            {
                wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token + "x");
                Assert.Equal(HttpStatusCode.Unauthorized, (await http.SendAsync(wrong)).StatusCode);
            }
            Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync(page + "/?token=nope")).StatusCode);

            using (var bearer = new HttpRequestMessage(HttpMethod.Get, page + "/api/moe"))
            {
                bearer.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
                using var ok = await http.SendAsync(bearer);
                Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
                Assert.Contains("\"slots\"", await ok.Content.ReadAsStringAsync());
            }
            // A browser: ?token= once, then the cookie it sets carries the page's own requests.
            using var first = await http.GetAsync(page + "/?token=" + token);
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
            var cookie = first.Headers.GetValues("Set-Cookie").Single().Split(';')[0];
            using (var withCookie = new HttpRequestMessage(HttpMethod.Get, page + "/api/moe"))
            {
                withCookie.Headers.Add("Cookie", cookie);
                Assert.Equal(HttpStatusCode.OK, (await http.SendAsync(withCookie)).StatusCode);
            }

            // Bound to loopback by default: another address of this machine does not answer.
            var outside = NetworkInterface.GetAllNetworkInterfaces()
                .Where(n => n.OperationalStatus == OperationalStatus.Up)
                .SelectMany(n => n.GetIPProperties().UnicastAddresses)
                .Select(a => a.Address)
                .FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a));
            if (outside is not null)
            {
                using var socket = new TcpClient();
                await Assert.ThrowsAnyAsync<SocketException>(() => socket.ConnectAsync(outside, ports[2]));
            }
        }
        finally
        {
            if (!silo.HasExited)
            {
                silo.Kill(entireProcessTree: true);
                await silo.WaitForExitAsync();
            }
            Directory.Delete(store, recursive: true);
        }
    }
}
