using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using MoeCluster.Client;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Training;
using MoeCluster.Hosting;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Bench;

/// <summary>
/// The layer forward+backward through one in-process silo (SDK over the co-hosted client) against
/// the reference layer in the same process, and the p50 of a 16-token inference forward.
/// Medians after warm-up; every row of one run shares the machine's state.
/// </summary>
public static class ClusterBenchmark
{
    public sealed record Row(string Config, string Mode, double MedianMs, double TokensPerSecond, double? RatioToReference);

    public static async Task<IReadOnlyList<Row>> RunAsync(bool quick, int repeats, CancellationToken cancellationToken)
    {
        var tokens = quick ? 1024 : 4096;
        repeats = quick ? Math.Min(repeats, 3) : repeats;
        var spec = new LayerSpec { DModel = 512, DFF = 2048, NumExperts = 8, TopK = 2, Seed = 1 };
        var config = $"T={tokens} d=512 d_ff=2048 E=8 k=2 f32";
        var rows = new List<Row>();

        var siloPort = FreePort();
        using var host = MoeSiloHost.Build(new MoeSiloOptions
        {
            SiloPort = siloPort, PrimarySiloPort = siloPort, GatewayPort = FreePort(), Devices = "cpu", ExpertsPerDevice = 16,
            ClusterId = $"moe-bench-{Environment.ProcessId}",
        }, logging: _ => { });
        await host.StartAsync(cancellationToken);
        var client = MoeClusterClient.FromClusterClient(host.Services.GetRequiredService<IClusterClient>());
        var layer = await client.CreateLayerAsync("bench", spec);

        using var reference = new ReferenceMoeLayer(LayerSpecMapping.ToConfig(spec), spec.Seed, "bench");
        using var generator = new Generator(7);
        using var x = randn(tokens, spec.DModel, generator: generator);
        using var dy = randn(tokens, spec.DModel, generator: generator);

        var refMs = await Median(repeats, warmup: 2, () =>
        {
            using var scope = NewDisposeScope();
            var input = x.detach().requires_grad_(true);
            var output = reference.Forward(input, train: true);
            output.Y.mul(dy).sum().add(output.Aux).backward();
            reference.zero_grad();
            return Task.CompletedTask;
        });
        rows.Add(new Row(config, "reference fwd+bwd", refMs, tokens / (refMs / 1000), null));

        long batch = 0;
        var clusterMs = await Median(repeats, warmup: 2, async () =>
        {
            var id = ++batch;
            using var forward = await layer.ForwardAsync(x, batchId: id);
            using var dx = await layer.BackwardAsync(id, dy);
        });
        rows.Add(new Row(config, "1 in-process silo fwd+bwd", clusterMs, tokens / (clusterMs / 1000), clusterMs / refMs));

        // A 16-token batch is memory-bound: its 32 assignments touch nearly every expert, and each
        // expert's weights (8 MB here) are read for a handful of rows. The reference row is that floor.
        using var small = randn(16, spec.DModel, generator: generator);
        var smallConfig = "T=16 d=512 d_ff=2048 E=8 k=2 f32";
        var referenceP50 = await Percentile50(quick ? 50 : 300, () =>
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            reference.Forward(small, train: false);
            return Task.CompletedTask;
        });
        rows.Add(new Row(smallConfig, "reference fwd p50", referenceP50, 16 / (referenceP50 / 1000), null));
        var clusterP50 = await Percentile50(quick ? 50 : 300, async () =>
        {
            using var forward = await layer.ForwardAsync(small, train: false);
        });
        rows.Add(new Row(smallConfig, "1 in-process silo fwd p50", clusterP50, 16 / (clusterP50 / 1000), clusterP50 / referenceP50));

        var table = new Table().AddColumns("config", "mode", "median ms", "tokens/s", "ratio to reference");
        foreach (var r in rows)
            table.AddRow(r.Config, r.Mode, $"{r.MedianMs:F2}", $"{r.TokensPerSecond:N0}", r.RatioToReference is { } ratio ? $"{ratio:F3}" : "");
        AnsiConsole.Write(table);
        AnsiConsole.WriteLine($"machine: {Environment.ProcessorCount} cores, libtorch threads {torch.get_num_threads()}, {repeats} repeats after warm-up");
        await host.StopAsync(cancellationToken);
        return rows;
    }

    private static async Task<double> Median(int repeats, int warmup, Func<Task> work)
    {
        for (int i = 0; i < warmup; i++) await work();
        var times = new List<double>();
        for (int i = 0; i < repeats; i++)
        {
            var watch = Stopwatch.StartNew();
            await work();
            times.Add(watch.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }

    private static async Task<double> Percentile50(int iterations, Func<Task> work)
    {
        var latencies = new List<double>();
        for (int i = 0; i < iterations; i++)
        {
            var watch = Stopwatch.StartNew();
            await work();
            if (i >= 10) latencies.Add(watch.Elapsed.TotalMilliseconds); // the first ten warm up
        }
        latencies.Sort();
        return latencies[latencies.Count / 2];
    }

    private static int FreePort()
    {
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}
