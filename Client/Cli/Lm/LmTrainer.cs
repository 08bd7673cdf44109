using System.Text.Json;
using System.Text.Json.Serialization;
using Spectre.Console;

namespace MoeCluster.Cli.Lm;

/// <summary>What <c>./moe lm train --json</c> prints and writes as the run's <c>summary.json</c>.</summary>
public sealed record LmSummary(
    [property: JsonPropertyName("experts")] int Experts,
    [property: JsonPropertyName("seed")] long Seed,
    [property: JsonPropertyName("steps")] long Steps,
    [property: JsonPropertyName("tokens_per_step")] long TokensPerStep,
    [property: JsonPropertyName("final_train_loss")] double FinalTrainLoss,
    [property: JsonPropertyName("validation")] IReadOnlyList<LmValidationPoint> Validation,
    [property: JsonPropertyName("tokens_per_second")] double TokensPerSecond,
    [property: JsonPropertyName("model")] string Model,
    [property: JsonPropertyName("plot")] string Plot,
    [property: JsonPropertyName("in_process")] bool InProcess);

/// <summary>
/// <c>./moe lm train</c>: trains the byte-level Switch Transformer on the fortunes text with a
/// progress bar, a validation loss every --eval-every steps and a checkpoint every
/// --checkpoint-every, then exports the model and plots its losses into the run directory.
/// </summary>
public static class LmTrainer
{
    public static async Task<LmSummary> RunAsync(LmTrainOptions options, CancellationToken cancellationToken = default)
    {
        var console = options.Quiet ? AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(TextWriter.Null) })
            : options.Json ? AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }) : AnsiConsole.Console;
        void Log(string line) => console.MarkupLine($"[grey]{Markup.Escape(line)}[/]");

        await using var session = await LmSession.StartAsync(options, Log, cancellationToken);
        var config = session.Config;
        Log($"model: {config.Layers} layers, d_model {config.DModel}, {config.Heads} heads, d_ff {config.DFF}, context {config.Context}, " +
            (config.Experts == 0 ? "dense FFNs" : $"{config.Experts} experts top-1 in blocks {string.Join(",", config.MoeBlocks)}" +
                (session.Settings.InProcess ? " (computed in this process)" : " (on the cluster)")));
        Log($"text: {session.Text.Fortunes:N0} fortunes from {session.Text.Directory}, {session.Text.Train.Length:N0} training bytes, " +
            $"{session.Text.Validation.Length:N0} validation bytes; {options.Steps} steps × {session.TokensPerStep} tokens = " +
            $"{(double)options.Steps * session.Settings.Batch / session.Text.TrainWindows:P0} of an epoch");

        async Task TrainOne()
        {
            cancellationToken.ThrowIfCancellationRequested();
            await session.TrainStepAsync();
            if (session.Step % session.Settings.EvalEvery == 0 || session.Step == options.Steps) await session.EvaluateAsync();
            if (session.Step % session.Settings.CheckpointEvery == 0) await session.WriteCheckpointAsync();
        }

        if (options.Json || options.Quiet)
            while (session.Step < options.Steps) await TrainOne();
        else
            await console.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .StartAsync(async ctx =>
                {
                    var task = ctx.AddTask("training", maxValue: options.Steps);
                    task.Value = session.Step;
                    while (session.Step < options.Steps)
                    {
                        await TrainOne();
                        task.Value = session.Step;
                        var validation = session.History.Validation.Count > 0 ? $"  validation {session.History.Validation[^1].Loss:F3}" : "";
                        task.Description = $"step {session.Step}/{options.Steps}  loss {session.History.Train[^1]:F3}{validation}";
                    }
                });

        var model = await session.ExportAsync(Path.Combine(options.Run, "model.safetensors"));
        var plot = Plots.LmPlots.WriteRun(Path.Combine(options.Run, "loss.png"), session.History,
            $"byte-level LM, {(config.Experts == 0 ? "dense" : $"{config.Experts} experts")}, seed {config.Seed}");
        var history = session.History;
        var tail = history.Train.TakeLast(Math.Max(1, Math.Min(50, history.Train.Count / 10)));
        var summary = new LmSummary(config.Experts, config.Seed, session.Step, session.TokensPerStep, tail.Average(), history.Validation,
            history.TrainSeconds > 0 ? history.Train.Count * session.TokensPerStep / history.TrainSeconds : 0, model, plot, session.Settings.InProcess);
        File.WriteAllText(Path.Combine(options.Run, "summary.json"), JsonSerializer.Serialize(summary, CliJson.Options));

        if (options.Json && !options.Quiet) Console.WriteLine(JsonSerializer.Serialize(summary, CliJson.Options));
        else if (!options.Quiet) Report(console, summary);
        return summary;
    }

    private static void Report(IAnsiConsole console, LmSummary summary)
    {
        var table = new Table().Title("validation loss").AddColumn(new TableColumn("step").RightAligned()).AddColumn(new TableColumn("nats per byte").RightAligned());
        var points = summary.Validation;
        var shown = Enumerable.Range(0, Math.Min(10, points.Count)).Select(i => points[i * (points.Count - 1) / Math.Max(1, Math.Min(10, points.Count) - 1)]).Distinct();
        foreach (var p in shown) table.AddRow($"{p.Step}", $"{p.Loss:F4}");
        console.Write(table);
        console.MarkupLine($"{summary.Steps} steps; training loss {summary.FinalTrainLoss:F3}, validation {(points.Count > 0 ? points[^1].Loss : double.NaN):F3}; " +
            $"{summary.TokensPerSecond:N0} tokens/s in training steps");
        console.MarkupLine($"model: {Markup.Escape(summary.Model)}");
        console.MarkupLine($"plot: {Markup.Escape(summary.Plot)}");
    }
}
