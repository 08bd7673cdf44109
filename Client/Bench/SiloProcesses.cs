using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using MoeCluster.Client;
using MoeCluster.Hosting;

namespace MoeCluster.Bench;

/// <summary>
/// (c): silo processes on loopback, started from the built silo executable with localhost
/// membership (the first is the primary) and a temporary checkpoint directory. Disposing kills
/// them and deletes the directory; so does the end of this process, however it ends, so that a
/// Ctrl+C or a crash leaves no silo behind.
/// </summary>
public sealed class SiloProcesses : IAsyncDisposable
{
    private static readonly ConcurrentDictionary<Process, bool> Live = new();

    static SiloProcesses()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) => KillAll();
        AppDomain.CurrentDomain.UnhandledException += (_, _) => KillAll();
    }

    private readonly List<(Process Process, StringBuilder Log)> silos;
    private readonly DirectoryInfo store;

    private SiloProcesses(List<(Process, StringBuilder)> silos, DirectoryInfo store, string clusterId, int[] gatewayPorts)
    {
        this.silos = silos;
        this.store = store;
        ClusterId = clusterId;
        GatewayPorts = gatewayPorts;
    }

    public string ClusterId { get; }
    public int[] GatewayPorts { get; }
    public IEnumerable<int> ProcessIds => silos.Select(s => s.Process.Id);

    public static async Task<SiloProcesses> StartAsync(int count, int expertsPerDevice, int torchThreads)
    {
        var dll = SiloDll();
        var clusterId = $"moe-bench-{Environment.ProcessId}";
        var store = Directory.CreateTempSubdirectory("moe-bench-store-");
        var ports = LoopbackPorts.Free(2 * count);
        var started = new List<(Process, StringBuilder)>();
        var ready = new List<Task>();
        try
        {
            for (int i = 0; i < count; i++)
            {
                var log = new StringBuilder();
                var up = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                var process = new Process
                {
                    StartInfo = SteadyStateJit.WithoutTiering(new ProcessStartInfo("dotnet",
                        $"\"{dll}\" --port {ports[2 * i]} --gateway-port {ports[2 * i + 1]} --primary-port {ports[0]} " +
                        $"--cluster-id {clusterId} --devices cpu --experts-per-device {expertsPerDevice} --threads {torchThreads} " +
                        $"--store \"{store.FullName}\" --name bench-silo-{i}")
                    {
                        RedirectStandardOutput = true,
                        RedirectStandardError = true,
                        UseShellExecute = false,
                    }),
                };
                DataReceivedEventHandler record = (_, e) =>
                {
                    if (e.Data is null) return;
                    lock (log) log.AppendLine(e.Data);
                    if (e.Data.StartsWith("moe silo ", StringComparison.Ordinal)) up.TrySetResult();
                };
                process.OutputDataReceived += record;
                process.ErrorDataReceived += record;
                process.Start();
                Live[process] = true;
                started.Add((process, log));
                process.BeginOutputReadLine();
                process.BeginErrorReadLine();
                ready.Add(WaitReady(process, log, up.Task, ports[2 * i]));
            }
            await Task.WhenAll(ready);
            return new SiloProcesses(started, store, clusterId, Enumerable.Range(0, count).Select(i => ports[2 * i + 1]).ToArray());
        }
        catch
        {
            foreach (var (p, _) in started) Kill(p);
            store.Delete(recursive: true);
            throw;
        }
    }

    private static async Task WaitReady(Process process, StringBuilder log, Task up, int port)
    {
        var first = await Task.WhenAny(up, process.WaitForExitAsync(), Task.Delay(TimeSpan.FromSeconds(90)));
        if (first == up) return;
        string output;
        lock (log) output = log.ToString();
        throw new InvalidOperationException($"the silo process on port {port} did not start within 90 s; its output:\n{output}");
    }

    /// <summary>An SDK client of these silos, once every silo advertises its slots (so experts spread over all of them).</summary>
    public async Task<MoeClusterClient> ConnectAsync()
    {
        var client = await MoeClusterClient.ConnectAsync(new MoeClientOptions { GatewayPorts = GatewayPorts, ClusterId = ClusterId });
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while ((await client.GetSlotUsageAsync()).Where(u => u.Capacity > 0).Select(u => u.Silo).Distinct().Count() < silos.Count)
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"the {silos.Count} bench silos did not all advertise their slots within 60 s");
            await Task.Delay(100);
        }
        return client;
    }

    /// <summary>Where <c>dotnet build</c> put the silo: beside this program's configuration, under the repository root.</summary>
    private static string SiloDll()
    {
        var configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}") ? "Debug" : "Release";
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (!File.Exists(Path.Combine(dir.FullName, "MoeCluster.sln"))) continue;
            var dll = Path.Combine(dir.FullName, "Silo", "bin", configuration, "net10.0", "MoeCluster.Silo.dll");
            return File.Exists(dll) ? dll
                : throw new FileNotFoundException($"the silo executable {dll} is missing; build the solution first (./moe bench does)");
        }
        throw new InvalidOperationException($"no MoeCluster.sln above {AppContext.BaseDirectory}; the benchmark runs from the repository's build output");
    }

    private static void Kill(Process process)
    {
        try
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException) { } // it had already gone
        Live.TryRemove(process, out _);
    }

    private static void KillAll()
    {
        foreach (var p in Live.Keys) Kill(p);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var (p, _) in silos)
        {
            Kill(p);
            await p.WaitForExitAsync();
            p.Dispose();
        }
        try { store.Delete(recursive: true); } catch (IOException) { }
    }
}
