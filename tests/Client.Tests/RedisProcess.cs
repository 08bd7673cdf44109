using System.Diagnostics;

namespace MoeCluster.Client.Tests;

/// <summary>A redis-server of the test's own, on a free port, that the test may stop and start again.</summary>
public sealed class RedisProcess : IAsyncDisposable
{
    private Process? process;

    public RedisProcess() => Port = SiloProcess.FreePorts(1)[0];

    public int Port { get; }
    public string Address => $"127.0.0.1:{Port}";

    public async Task StartAsync()
    {
        process = Process.Start(new ProcessStartInfo("redis-server", $"--port {Port} --bind 127.0.0.1 --save '' --appendonly no")
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
