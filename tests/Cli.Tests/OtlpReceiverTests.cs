using System.Net;
using System.Net.Sockets;
using System.Text;
using MoeCluster.Hosting;
using Xunit;

namespace MoeCluster.Cli.Tests;

/// <summary>The tests' OTLP collector keeps what silos export, and stops cleanly even while an export is arriving.</summary>
public class OtlpReceiverTests
{
    [Fact]
    public async Task A_metrics_post_is_kept_and_answered_200_and_other_paths_404()
    {
        await using var receiver = new OtlpReceiver(LoopbackPorts.Free(1)[0]);
        using var http = new HttpClient();

        using var ok = await http.PostAsync($"{receiver.Endpoint}/v1/metrics", new ByteArrayContent(Encoding.UTF8.GetBytes("moe.routed")));
        using var missing = await http.PostAsync($"{receiver.Endpoint}/v1/traces", new ByteArrayContent([1]));

        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.True(receiver.AnyMetricsRequestContains("moe.routed"));
    }

    [Fact]
    public async Task Stopping_while_a_request_body_is_still_arriving_drops_that_request_and_ends_cleanly()
    {
        var port = LoopbackPorts.Free(1)[0];
        var receiver = new OtlpReceiver(port);
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, port);
        var stream = client.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(
            $"POST /v1/metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n"));
        await stream.WriteAsync(new byte[10]); // a hundredth of the body: the receiver waits for the rest
        await Task.Delay(500);

        await receiver.DisposeAsync(); // as a test ends while its silo still exports

        Assert.Empty(receiver.Requests);
    }
}
