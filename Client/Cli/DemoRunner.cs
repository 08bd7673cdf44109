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
    /// <summary>Steps between the layer's checkpoints (LayerSpec.CheckpointEvery).</summary>
    public int CheckpointEvery { get; init; } = 1;
    public bool Json { get; init; }
    /// <summary>Train against this running cluster instead of starting one in-process.</summary>
    public MoeClientOptions? Cluster { get; init; }
    public string Layer { get; init; } = "demo";
    /// <summary>Write the trained layer as safetensors here when training ends.</summary>
    public string? Export { get; init; }
    /// <summary>Leave the layer in the cluster when the demo ends.</summary>
    public bool Keep { get; init; }
    /// <summary>Learning rate of the layer (its spec) and of the demo's local embedding and head.</summary>
    public double LearningRate { get; init; } = 3e-3;
    /// <summary>The layer's capacity factor in training.</summary>
    public double CapacityFactor { get; init; } = 1.25;
    /// <summary>Dropout inside the experts (LayerSpec.ExpertDropout).</summary>
    public double ExpertDropout { get; init; }
    /// <summary>Start from a file that <see cref="Export"/> wrote (the layer, and its local model beside it) instead of fresh weights.</summary>
    public string? Init { get; init; }
    /// <summary>Freezing and learning rates for the layer, set before the first step.</summary>
    public TrainingControls? Controls { get; init; }
    /// <summary>After training, show per expert what it receives on fresh tokens (the specialization report).</summary>
    public bool Inspect { get; init; }
    /// <summary>Write the specialization heat map (experts × classes) as a PNG here.</summary>
    public string? Plot { get; init; }
    /// <summary>Log no progress to the console (the sweep runs the demo many times).</summary>
    public bool Quiet { get; init; }
    /// <summary>Where the loss and tokens-per-expert PNGs go; null: no plots.</summary>
    public string? Plots { get; init; } = "plots";
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
    [property: JsonPropertyName("seconds")] double Seconds)
{
    /// <summary>With --inspect: per expert, what it received on the evaluation tokens.</summary>
    [JsonPropertyName("specialization"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public SpecializationReport? Specialization { get; init; }
    /// <summary>The PNGs written (loss, tokens per expert), absolute paths; empty with no plots.</summary>
    [JsonPropertyName("plots")] public string[] Plots { get; init; } = [];
}

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
        if (options.Init is { } initFile && !File.Exists(initFile)) throw new ArgumentException($"--init file {initFile} does not exist; expected a file written by ./moe demo --export");
        var console = options.Quiet ? AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(TextWriter.Null) })
            : options.Json ? AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }) : AnsiConsole.Console;
        var watch = Stopwatch.StartNew();

        EmbeddedCluster? embedded = null;
        MoeClientOptions connect;
        if (options.Cluster is { } external)
        {
            console.MarkupLine($"[grey]connecting to the cluster at {Markup.Escape(external.Cluster)} (id {Markup.Escape(external.ClusterId)})…[/]");
            connect = external;
        }
        else
        {
            console.MarkupLine($"[grey]starting {options.Silos} silo(s) in this process, {options.ExpertsPerDevice} expert slot(s) per device…[/]");
            embedded = await EmbeddedCluster.StartAsync(options.Silos, options.ExpertsPerDevice, cancellationToken);
            connect = new MoeClientOptions { ClusterId = embedded.ClusterId, GatewayPorts = embedded.GatewayPorts };
        }
        await using var stopEmbedded = embedded;
        await using var client = await MoeClusterClient.ConnectAsync(connect, cancellationToken);
        if (embedded is not null) await WaitForSilosAsync(client, options.Silos, cancellationToken);

        var spec = new LayerSpec
        {
            DModel = options.DModel, DFF = options.DFF, NumExperts = options.Experts, TopK = options.TopK,
            CapacityFactor = options.CapacityFactor, ExpertDropout = options.ExpertDropout, Seed = options.Seed, CheckpointEvery = options.CheckpointEvery,
            Optimizer = new OptimizerSpec { LearningRate = options.LearningRate },
        };
        if (embedded is null && await client.Orleans.GetGrain<IMoeRouterGrain>(options.Layer).GetSpec() is not null)
        {
            // The demo's own layer, left by an earlier run (--keep, or a run that was stopped): start over.
            console.MarkupLine($"[grey]deleting layer \"{Markup.Escape(options.Layer)}\" left by an earlier demo run…[/]");
            await (await client.GetLayerAsync(options.Layer)).DeleteAsync();
        }
        var layer = await client.CreateLayerAsync(options.Layer, spec);
        console.MarkupLine($"[grey]layer \"{Markup.Escape(options.Layer)}\": {spec.NumExperts} experts, top-{spec.TopK}, d_model {spec.DModel}, d_ff {spec.DFF}[/]");

        using var model = new DemoModel(layer, SyntheticTask.Vocabulary, SyntheticTask.Classes, options.Seed);
        if (options.Init is { } init)
        {
            var (version, local) = await DemoCheckpoint.LoadAsync(layer, model, init);
            console.MarkupLine($"[grey]started from {Markup.Escape(init)}: layer at version {version}{(local is null ? "; no local model beside it, so the embedding and head start fresh" : $", local model from {Markup.Escape(local)}")}[/]");
        }
        if (options.Controls is { } controls)
        {
            await layer.SetTrainingControlsAsync(controls);
            console.MarkupLine($"[grey]training controls: {Markup.Escape(DescribeControls(controls))}[/]");
        }
        using var optimizer = optim.AdamW(model.parameters(), lr: options.LearningRate);
        using var generator = new Generator((ulong)options.Seed);
        var losses = new List<double>(options.Steps);
        var routedPerStep = new List<long[]>(options.Steps);

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
            routedPerStep.Add(model.Moe.LastRouting!.Routed);
            optimizer.step();
            optimizer.zero_grad();
            await layer.StepAsync();
            losses.Add(loss);
        }

        if (options.Json || options.Quiet)
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

        await layer.FlushAsync(); // the last step's checkpoints are written after it returns
        // The report then shows what the trained layer does with fresh tokens only.
        await layer.ResetSpecializationAsync();
        var accuracy = Evaluate(model, generator);
        var stats = await layer.GetStatsAsync();
        var report = options.Inspect || options.Plot is not null ? await layer.GetSpecializationAsync() : null;
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
            Seconds: watch.Elapsed.TotalSeconds)
        {
            Specialization = options.Inspect ? report : null,
            Plots = options.Plots is { } directory ? Plots.DemoPlots.Write(directory, losses, routedPerStep) : [],
        };

        if (options.Json && !options.Quiet)
            Console.WriteLine(JsonSerializer.Serialize(summary, CliJson.Options));
        else
            Report(console, losses, stats, summary);
        if (options.Inspect && report is not null && !options.Json) SpecializationTable.Write(console, report, SyntheticTask.TokenName);
        if (options.Plot is { } plot && report is not null)
        {
            Charts.SpecializationHeatMap(report, plot);
            console.MarkupLine($"wrote the heat map of classes per expert to {Markup.Escape(plot)}");
        }
        if (!options.Json) foreach (var written in summary.Plots) console.MarkupLine($"plot: {Markup.Escape(written)}");
        if (options.Export is { } path)
        {
            var version = await ExportCommands.WriteAsync(layer, path);
            var local = DemoCheckpoint.WriteLocal(model, path);
            console.MarkupLine($"exported layer \"{Markup.Escape(layer.Name)}\" at version {version} to {Markup.Escape(path)}, and the demo's embedding and head to {Markup.Escape(local)}");
        }
        if (embedded is null && !options.Keep) await layer.DeleteAsync();
        return summary;
    }

    private static string DescribeControls(TrainingControls c) =>
        $"router {(c.FreezeRouter ? "frozen" : c.RouterLearningRate is { } lr ? $"lr {lr}" : "trains")}, " +
        $"experts {(c.FreezeExperts ? "all frozen" : c.FrozenExperts.Length > 0 ? $"{string.Join(",", c.FrozenExperts)} frozen" : "train")}" +
        (c.ExpertLearningRateMultipliers.Count > 0 ? $", lr multipliers {string.Join(",", c.ExpertLearningRateMultipliers.Select(m => $"{m.Key}={m.Value}"))}" : "");

    /// <summary>Accuracy on 1,024 fresh tokens; their token ids and classes go to the layer's specialization report.</summary>
    private static double Evaluate(DemoModel model, Generator generator)
    {
        model.eval();
        using var scope = NewDisposeScope();
        var (tokens, labels) = SyntheticTask.Sample(generator, 1024);
        model.Moe.NextLabels = new TokenLabels(
            tokens.data<long>().Select(t => (int)t).ToArray(), labels.data<long>().Select(c => (int)c).ToArray());
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
