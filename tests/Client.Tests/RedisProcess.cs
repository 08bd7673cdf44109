using System.Diagnostics;
using MoeCluster.Hosting;

namespace MoeCluster.Client.Tests;

/// <summary>
/// A redis-server of the test's own, on a free port, that the test may stop and start again: empty
/// after a restart, or, given a data directory, with every write it had (an append-only file synced
/// on every write), as a Redis server with persistence comes back.
/// </summary>
public sealed class RedisProcess(string? dataDirectory = null) : IAsyncDisposable
{
    private Process? process;

    public int Port { get; } = LoopbackPorts.Free(1)[0];
    public string Address => $"127.0.0.1:{Port}";

    public async Task StartAsync()
    {
        var persistence = dataDirectory is null ? "--appendonly no" : $"--appendonly yes --appendfsync always --dir {dataDirectory}";
        process = Process.Start(new ProcessStartInfo("redis-server", $"--port {Port} --bind 127.0.0.1 --save '' {persistence}")
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        })!;
        process.BeginOutputReadLine();
        for (int i = 0; i < 100; i++)
        {
            try
            {
                using var client = new System.Net.Sockets.TcpClient();
                await client.ConnectAsync("127.0.0.1", Port);
                return;
            }
            catch (System.Net.Sockets.SocketException) { await Task.Delay(50); }
        }
        throw new InvalidOperationException($"redis-server on port {Port} did not start");
    }

    public async Task StopAsync()
    {
        if (process is null) return;
        process.Kill();
        await process.WaitForExitAsync();
        process.Dispose();
        process = null;
    }

    public async ValueTask DisposeAsync() => await StopAsync();
}
