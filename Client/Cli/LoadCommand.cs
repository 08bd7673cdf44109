using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using MoeCluster.Client;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Cli;

/// <summary>One kind of client's numbers in <c>./moe load</c>.</summary>
public sealed record LoadRow(
    [property: JsonPropertyName("kind")] string Kind,
    [property: JsonPropertyName("clients")] int Clients,
    [property: JsonPropertyName("operations")] long Operations,
    [property: JsonPropertyName("operations_per_s")] double OperationsPerSecond,
    [property: JsonPropertyName("tokens_per_s")] double TokensPerSecond,
    [property: JsonPropertyName("p50_ms")] double P50Ms,
    [property: JsonPropertyName("p99_ms")] double P99Ms,
    [property: JsonPropertyName("errors")] long Errors);

/// <summary>What <c>./moe load --json</c> prints.</summary>
public sealed record LoadReport(
    [property: JsonPropertyName("seconds")] double Seconds,
    [property: JsonPropertyName("rows")] LoadRow[] Rows,
    [property: JsonPropertyName("errors")] long Errors,
    [property: JsonPropertyName("first_errors")] string[] FirstErrors);

/// <summary>
/// <c>./moe load</c>: concurrent trainers (each its own layer: forward, backward, step) and
/// inference clients (forwards on the trainers' layers) against a running cluster for a while;
/// reports throughput, p50/p99 latency and errors, and exits 1 if any call failed.
/// </summary>
public static class LoadCommand
{
    public static Command Create()
    {
        var connection = new ClusterConnection();
        var clients = new Option<int>("--clients") { Description = "Concurrent clients: half train (rounded up), half run inference", DefaultValueFactory = _ => 4 };
        var seconds = new Option<double>("--seconds") { Description = "How long to run", DefaultValueFactory = _ => 10 };
        var tokens = new Option<int>("--tokens") { Description = "Tokens per micro-batch", DefaultValueFactory = _ => 256 };
        var microBatches = new Option<int>("--micro-batches") { Description = "Training micro-batches per step: that many forwards, then their backwards, then the step", DefaultValueFactory = _ => 1 };
        var savedTimeout = new Option<double>("--saved-forward-timeout") { Description = "Seconds a training forward of the load's layers waits for its backward before the cluster frees it (LayerSpec.SavedForwardTimeout)", DefaultValueFactory = _ => new LayerSpec { DModel = 1, DFF = 1, NumExperts = 1 }.SavedForwardTimeout.TotalSeconds };
        var json = new Option<bool>("--json") { Description = "Print only the report as JSON" };
        var command = new Command("load", "Runs concurrent trainers and inference clients against a cluster and reports throughput, p50/p99 latency and errors.\n\n" +
            "Example: ./moe load --cluster redis://127.0.0.1:6379 --clients 8 --seconds 30")
        {
            clients, seconds, tokens, microBatches, savedTimeout, json,
        };
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            var n = parse.GetValue(clients);
            var duration = parse.GetValue(seconds);
            var t = parse.GetValue(tokens);
            if (n < 1) throw new ArgumentException($"--clients is {n}; expected ≥ 1");
            if (!(duration > 0)) throw new ArgumentException($"--seconds is {duration}; expected > 0");
            if (t < 1) throw new ArgumentException($"--tokens is {t}; expected ≥ 1");
            var micro = parse.GetValue(microBatches);
            if (micro < 1) throw new ArgumentException($"--micro-batches is {micro}; expected ≥ 1");
            var timeout = parse.GetValue(savedTimeout);
            if (!(timeout > 0) || double.IsInfinity(timeout)) throw new ArgumentException($"--saved-forward-timeout is {timeout}; expected a number of seconds > 0");
            await using var client = await connection.ConnectAsync(parse, cancel);
            var report = await RunAsync(client, n, TimeSpan.FromSeconds(duration), t, parse.GetValue(json), cancel, micro, TimeSpan.FromSeconds(timeout));
            if (parse.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(report));
            else Print(report);
            return report.Errors == 0 ? 0 : 1;
        });
        return command;
    }

    private sealed class Recorder(string kind, int clients, int tokens)
    {
        private readonly List<double> latencies = [];
        private readonly List<string> errors = [];
        private long errorCount;

        public void Success(TimeSpan elapsed) { lock (latencies) latencies.Add(elapsed.TotalMilliseconds); }

        public void Failure(Exception e)
        {
            Interlocked.Increment(ref errorCount);
            lock (errors) if (errors.Count < 5) errors.Add($"{kind}: {e.GetType().Name}: {e.Message}");
        }

        public IEnumerable<string> Errors => errors;

        public LoadRow Row(double seconds)
        {
            var sorted = latencies.Order().ToArray();
            double At(double q) => sorted.Length == 0 ? 0 : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
            return new LoadRow(kind, clients, sorted.Length, sorted.Length / seconds, sorted.Length * (double)tokens / seconds,
                At(0.50), At(0.99), errorCount);
        }
    }

    public static async Task<LoadReport> RunAsync(MoeClusterClient client, int clients, TimeSpan duration, int tokens, bool quiet, CancellationToken cancellationToken,
        int microBatches = 1, TimeSpan? savedForwardTimeout = null)
    {
        var trainers = (clients + 1) / 2;
        var readers = clients - trainers;
        var spec = new LayerSpec { DModel = 64, DFF = 256, NumExperts = 8, TopK = 2, Seed = 7 };
        if (savedForwardTimeout is { } timeout) spec = spec with { SavedForwardTimeout = timeout };
        var prefix = $"load-{Environment.ProcessId}";
        var layers = await Task.WhenAll(Enumerable.Range(0, trainers).Select(i => client.CreateLayerAsync($"{prefix}-{i}", spec)));
        var training = new Recorder("train step (fwd+bwd+step)", trainers, tokens * microBatches);
        var inference = new Recorder("inference forward", readers, tokens);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        stop.CancelAfter(duration);
        var watch = Stopwatch.StartNew();

        async Task Train(RemoteMoeLayer layer, int seed)
        {
            using var generator = new Generator((ulong)seed);
            using var x = randn(tokens, spec.DModel, generator: generator);
            using var dy = randn(tokens, spec.DModel, generator: generator).mul_(0.01);
            while (!stop.IsCancellationRequested)
            {
                var started = Stopwatch.GetTimestamp();
                try
                {
                    var forwards = new List<RemoteLayerForward>();
                    try
                    {
                        for (int m = 0; m < microBatches; m++) forwards.Add(await layer.ForwardAsync(x));
                        foreach (var forward in forwards)
                            using (await layer.BackwardAsync(forward.BatchId, dy)) { }
                    }
                    finally
                    {
                        foreach (var forward in forwards) forward.Dispose();
                    }
                    await layer.StepAsync();
                    training.Success(Stopwatch.GetElapsedTime(started));
                }
                catch (Exception e) { training.Failure(e); }
            }
        }

        async Task Infer(RemoteMoeLayer layer, int seed)
        {
            using var generator = new Generator((ulong)seed);
            using var x = randn(tokens, spec.DModel, generator: generator);
            while (!stop.IsCancellationRequested)
            {
                var started = Stopwatch.GetTimestamp();
                try
                {
                    using var forward = await layer.ForwardAsync(x, train: false);
                    inference.Success(Stopwatch.GetElapsedTime(started));
                }
                catch (Exception e) { inference.Failure(e); }
            }
        }

        var work = Enumerable.Range(0, trainers).Select(i => Task.Run(() => Train(layers[i], 100 + i)))
            .Concat(Enumerable.Range(0, readers).Select(i => Task.Run(() => Infer(layers[i % trainers], 200 + i))))
            .ToList();
        if (quiet) await Task.WhenAll(work);
        else
            await AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new ElapsedTimeColumn())
                .StartAsync(async ctx =>
                {
                    var bar = ctx.AddTask($"{trainers} trainer(s), {readers} inference client(s)", maxValue: duration.TotalSeconds);
                    while (work.Any(w => !w.IsCompleted))
                    {
                        await Task.WhenAny(Task.WhenAll(work), Task.Delay(250, CancellationToken.None));
                        bar.Value = Math.Min(duration.TotalSeconds, watch.Elapsed.TotalSeconds);
                    }
                });
        var seconds = watch.Elapsed.TotalSeconds;
        await Task.WhenAll(layers.Select(l => l.DeleteAsync()));
        var rows = new[] { training.Row(seconds), inference.Row(seconds) }.Where(r => r.Clients > 0).ToArray();
        return new LoadReport(seconds, rows, rows.Sum(r => r.Errors), training.Errors.Concat(inference.Errors).ToArray());
    }

    private static void Print(LoadReport report)
    {
        var table = new Table().AddColumns("clients", "kind", "operations", "ops/s", "tokens/s", "p50 ms", "p99 ms", "errors");
        foreach (var r in report.Rows)
            table.AddRow($"{r.Clients}", r.Kind, $"{r.Operations}", $"{r.OperationsPerSecond:F1}", $"{r.TokensPerSecond:N0}", $"{r.P50Ms:F1}", $"{r.P99Ms:F1}", $"{r.Errors}");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"{report.Seconds:F1} s, {report.Errors} error(s)");
        foreach (var e in report.FirstErrors) AnsiConsole.MarkupLine($"[red]{Markup.Escape(e)}[/]");
    }
}
