using System.Diagnostics;
using System.Text;

namespace MoeCluster.Client.Tests;

/// <summary>A silo started as its own process from the built Silo executable, killed on dispose.</summary>
public sealed class SiloProcess : IAsyncDisposable
{
    private readonly Process process;
    private readonly StringBuilder log = new();
    private readonly TaskCompletionSource ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private bool disposed;

    private SiloProcess(Process process, int siloPort, int gatewayPort)
    {
        this.process = process;
        SiloPort = siloPort;
        GatewayPort = gatewayPort;
    }

    public int SiloPort { get; }
    public int GatewayPort { get; }
    public string Log { get { lock (log) return log.ToString(); } }

    public static async Task<SiloProcess> StartAsync(string arguments, int siloPort, int gatewayPort)
    {
        var start = new ProcessStartInfo("dotnet", $"\"{SiloDll}\" --port {siloPort} --gateway-port {gatewayPort} {arguments}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        var silo = new SiloProcess(Process.Start(start)!, siloPort, gatewayPort);
        silo.process.OutputDataReceived += (_, e) => silo.Record(e.Data);
        silo.process.ErrorDataReceived += (_, e) => silo.Record(e.Data);
        silo.process.BeginOutputReadLine();
        silo.process.BeginErrorReadLine();
        var started = await Task.WhenAny(silo.ready.Task, silo.process.WaitForExitAsync(), Task.Delay(TimeSpan.FromSeconds(60)));
        if (started != silo.ready.Task)
        {
            await silo.DisposeAsync();
            throw new InvalidOperationException($"silo on port {siloPort} did not start; its output:\n{silo.Log}");
        }
        return silo;
    }

    private void Record(string? line)
    {
        if (line is null) return;
        lock (log) log.AppendLine(line);
        if (line.StartsWith("moe silo ")) ready.TrySetResult();
    }

    public static string SiloDll
    {
        get
        {
            var configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}") ? "Release" : "Debug";
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "MoeCluster.sln")))
                    return Path.Combine(dir.FullName, "Silo", "bin", configuration, "net10.0", "MoeCluster.Silo.dll");
            throw new InvalidOperationException($"no MoeCluster.sln above {AppContext.BaseDirectory}");
        }
    }

    /// <summary>The process's resident memory (VmRSS), in bytes.</summary>
    public long ResidentBytes()
    {
        var line = File.ReadLines($"/proc/{process.Id}/status").First(l => l.StartsWith("VmRSS:"));
        return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
    }

    /// <summary>SIGTERM, as a service manager stops a silo, and waits for the process to end.</summary>
    public async Task StopGracefullyAsync()
    {
        using (var kill = Process.Start("kill", $"-TERM {process.Id}")!) await kill.WaitForExitAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
    }

    public async ValueTask DisposeAsync()
    {
        if (disposed) return;
        disposed = true;
        if (!process.HasExited)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
        }
        process.Dispose();
    }
}
