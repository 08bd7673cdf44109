using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using MoeCluster.Client;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Cli;

public sealed record DemoOptions
{
    public int Steps { get; init; } = 200;
    public int Experts { get; init; } = 8;
    public int TopK { get; init; } = 2;
    public int Silos { get; init; } = 2;
    public int ExpertsPerDevice { get; init; } = 4;
    public int BatchTokens { get; init; } = 256;
    public int DModel { get; init; } = 32;
    public int DFF { get; init; } = 64;
    public long Seed { get; init; } = 1;
    public bool Json { get; init; }
}

/// <summary>What <c>./moe demo --json</c> prints.</summary>
public sealed record DemoSummary(
    [property: JsonPropertyName("initial_loss")] double InitialLoss,
    [property: JsonPropertyName("final_loss")] double FinalLoss,
    [property: JsonPropertyName("steps")] int Steps,
    [property: JsonPropertyName("experts")] int Experts,
    [property: JsonPropertyName("silos")] int Silos,
    [property: JsonPropertyName("accuracy")] double Accuracy,
    [property: JsonPropertyName("tokens_per_expert")] long[] TokensPerExpert,
    [property: JsonPropertyName("dropped")] long Dropped,
    [property: JsonPropertyName("seconds")] double Seconds);

/// <summary>
/// <c>./moe demo</c>: starts an embedded cluster, trains <see cref="DemoModel"/> on
/// <see cref="SyntheticTask"/> with a progress bar, and shows the loss falling and where the
/// tokens went.
/// </summary>
public static class DemoRunner
{
    public static async Task<DemoSummary> RunAsync(DemoOptions options, CancellationToken cancellationToken = default)
    {
        if (options.Steps < 1) throw new ArgumentException($"--steps is {options.Steps}; expected ≥ 1");
        var console = options.Json ? AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }) : AnsiConsole.Console;
        var watch = Stopwatch.StartNew();

        console.MarkupLine($"[grey]starting {options.Silos} silo(s) in this process, {options.ExpertsPerDevice} expert slot(s) per device…[/]");
        await using var cluster = await EmbeddedCluster.StartAsync(options.Silos, options.ExpertsPerDevice, cancellationToken);
        await using var client = await MoeClusterClient.ConnectAsync(new MoeClientOptions
        {
            ClusterId = cluster.ClusterId,
            GatewayPorts = cluster.GatewayPorts,
        }, cancellationToken);
        await WaitForSilosAsync(client, options.Silos, cancellationToken);

        var spec = new LayerSpec
        {
            DModel = options.DModel, DFF = options.DFF, NumExperts = options.Experts, TopK = options.TopK,
            CapacityFactor = 1.25, Seed = options.Seed,
            Optimizer = new OptimizerSpec { LearningRate = 3e-3 },
        };
        var layer = await client.CreateLayerAsync("demo", spec);
        console.MarkupLine($"[grey]layer \"demo\": {spec.NumExperts} experts, top-{spec.TopK}, d_model {spec.DModel}, d_ff {spec.DFF}[/]");

        using var model = new DemoModel(layer, SyntheticTask.Vocabulary, SyntheticTask.Classes, options.Seed);
        using var optimizer = optim.AdamW(model.parameters(), lr: 3e-3);
        using var generator = new Generator((ulong)options.Seed);
        var losses = new List<double>(options.Steps);

        async Task TrainStep()
        {
            double loss;
            using (var scope = NewDisposeScope())
            {
                var (tokens, labels) = SyntheticTask.Sample(generator, options.BatchTokens);
                var logits = model.forward(tokens);
                var total = nn.functional.cross_entropy(logits, labels);
                loss = total.item<float>();
                total.add(model.Moe.AuxLoss!).backward();
            }
            optimizer.step();
            optimizer.zero_grad();
            await layer.StepAsync();
            losses.Add(loss);
        }

        if (options.Json)
            for (int s = 0; s < options.Steps; s++) await TrainStep();
        else
            await console.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .StartAsync(async ctx =>
                {
                    var task = ctx.AddTask("training", maxValue: options.Steps);
                    for (int s = 0; s < options.Steps; s++)
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        await TrainStep();
                        task.Increment(1);
                        task.Description = $"step {s + 1}/{options.Steps}  loss {losses[^1]:F3}";
                    }
                });

        var accuracy = Evaluate(model, generator);
        var stats = await layer.GetStatsAsync();
        var tail = Math.Max(1, Math.Min(10, losses.Count / 10));
        var summary = new DemoSummary(
            InitialLoss: losses[0],
            FinalLoss: losses.TakeLast(tail).Average(),
            Steps: options.Steps,
            Experts: options.Experts,
            Silos: stats.Experts.Select(e => e.Expert.Placement.Silo).Distinct().Count(),
            Accuracy: accuracy,
            TokensPerExpert: stats.Experts.Select(e => e.TokensRouted).ToArray(),
            Dropped: stats.TokensDropped,
            Seconds: watch.Elapsed.TotalSeconds);

        if (options.Json)
            Console.WriteLine(JsonSerializer.Serialize(summary));
        else
            Report(console, losses, stats, summary);
        return summary;
    }

    private static double Evaluate(DemoModel model, Generator generator)
    {
        model.eval();
        using var scope = NewDisposeScope();
        var (tokens, labels) = SyntheticTask.Sample(generator, 1024);
        var predicted = model.forward(tokens).argmax(1);
        var accuracy = predicted.eq(labels).to(ScalarType.Float32).mean().item<float>();
        model.train();
        return accuracy;
    }

    private static async Task WaitForSilosAsync(MoeClusterClient client, int silos, CancellationToken cancellationToken)
    {
        // Silos learn each other's device slots from silo metadata shortly after joining.
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while ((await client.GetSlotUsageAsync()).Where(u => u.Capacity > 0).Select(u => u.Silo).Distinct().Count() < silos)
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"the {silos} embedded silos did not see each other within 30 s");
            await Task.Delay(100, cancellationToken);
        }
    }

    private static void Report(IAnsiConsole console, List<double> losses, LayerStats stats, DemoSummary summary)
    {
        var curve = new Table().Title("loss").AddColumn("step").AddColumn(new TableColumn("loss").RightAligned());
        var points = Enumerable.Range(0, 10).Select(i => i * (losses.Count - 1) / 9).Distinct();
        foreach (var i in points) curve.AddRow($"{i + 1}", $"{losses[i]:F4}");
        console.Write(curve);

        var experts = new Table().Title("tokens per expert").AddColumns("expert", "silo", "device")
            .AddColumn(new TableColumn("tokens routed").RightAligned())
            .AddColumn(new TableColumn("dropped").RightAligned())
            .AddColumn(new TableColumn("compute ms").RightAligned());
        foreach (var e in stats.Experts)
            experts.AddRow($"{e.Expert.Index}", Markup.Escape(SiloLabel.Short(e.Expert.Placement.Silo)), e.Expert.Placement.Device,
                $"{e.TokensRouted:N0}", $"{e.TokensDropped:N0}", $"{e.Expert.ComputeMilliseconds:N0}");
        console.Write(experts);
        console.MarkupLine($"loss {summary.InitialLoss:F3} → {summary.FinalLoss:F3} over {summary.Steps} steps; " +
            $"accuracy {summary.Accuracy:P1} on fresh tokens; {summary.Silos} silo(s); {summary.Seconds:F1} s");
    }
}
