using System.Text.Json.Serialization;
using Spectre.Console;

namespace MoeCluster.Cli.Lm;

/// <summary>One expert count of a sweep: the median over its seeds.</summary>
public sealed record LmSweepRow(
    [property: JsonPropertyName("experts")] int Experts,
    [property: JsonPropertyName("seeds")] long[] Seeds,
    [property: JsonPropertyName("final_validation")] double[] FinalValidation,
    [property: JsonPropertyName("median_final_validation")] double MedianFinalValidation,
    [property: JsonPropertyName("steps_to_dense_final")] long?[] StepsToDenseFinal,
    [property: JsonPropertyName("median_steps_to_dense_final")] double? MedianStepsToDenseFinal,
    [property: JsonPropertyName("tokens_per_second")] double MedianTokensPerSecond,
    [property: JsonPropertyName("curve")] IReadOnlyList<LmValidationPoint> MedianCurve);

/// <summary>What <c>./moe lm sweep --json</c> prints.</summary>
public sealed record LmSweepSummary(
    [property: JsonPropertyName("steps")] int Steps,
    [property: JsonPropertyName("rows")] LmSweepRow[] Rows,
    [property: JsonPropertyName("plot")] string Plot);

/// <summary>
/// <c>./moe lm sweep --experts 0,2,4,8,16 --seeds 1,2,3</c>: one training per expert count and
/// seed, with the same data and settings, each on a fresh embedded cluster in a run directory of
/// its own; then the validation loss against step per expert count (the median over seeds) as a
/// table and a plot, and for each count the first validation step at which it reached the
/// dense model's final validation loss (Switch Transformer's "steps to the dense quality").
/// Seed by seed, so that a sweep stopped part-way holds whole comparisons; with --resume a sweep
/// goes on in its directory: finished runs are read back, an interrupted one resumes from its
/// checkpoint, and more seeds may be added.
/// </summary>
public static class LmSweep
{
    public static async Task<LmSweepSummary> RunAsync(int[] experts, long[] seeds, LmTrainOptions template, string directory, bool json,
        CancellationToken cancellationToken, bool resume = false)
    {
        var console = json ? AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }) : AnsiConsole.Console;
        var runs = new Dictionary<(int, long), LmSummary>();
        foreach (var seed in seeds)
            foreach (var e in experts)
            {
                var options = template with { Config = template.Config with { Experts = e, Seed = seed }, Run = Path.Combine(directory, $"experts-{e}-seed-{seed}"), Quiet = true };
                var what = $"{(e == 0 ? "the dense model" : $"{e} experts")}, seed {seed}";
                var summaryPath = Path.Combine(options.Run, "summary.json");
                var checkpointPath = LmCheckpoint.PathIn(options.Run);
                var earlier = File.Exists(checkpointPath) ? LmCheckpoint.Read(checkpointPath) : null;
                if (earlier is null && !File.Exists(summaryPath))
                    console.MarkupLine($"[grey]training {what}, {template.Steps} steps → {Markup.Escape(options.Run)}[/]");
                else if (!resume)
                    throw new ArgumentException($"{options.Run} holds an earlier run; pass --resume to go on with the sweep in {directory}, or choose another --dir");
                else
                {
                    if (earlier is not null && (earlier.Config != options.Config || earlier.Settings != options.Settings))
                        throw new ArgumentException($"{options.Run} holds a run with another model or other settings than this sweep's; " +
                            "resume with the options the sweep began with, or choose another --dir");
                    if (File.Exists(summaryPath))
                    {
                        var kept = ReadSummary(summaryPath);
                        if (kept.Experts != e || kept.Seed != seed || kept.Steps != template.Steps || kept.InProcess)
                            throw new ArgumentException($"{summaryPath} is a run of {kept.Experts} experts, seed {kept.Seed}, {kept.Steps} steps" +
                                $"{(kept.InProcess ? " in-process" : "")}; the sweep asks for {e}, seed {seed}, {template.Steps} on the cluster");
                        runs[(e, seed)] = kept;
                        console.MarkupLine($"[grey]kept {what}: validation {kept.Validation[^1].Loss:F4}, {kept.TokensPerSecond:N0} tokens/s ({Markup.Escape(options.Run)})[/]");
                        continue;
                    }
                    if (earlier!.Step >= template.Steps)
                    {
                        // Killed between its last checkpoint and its summary: the model was not exported; train it again.
                        console.MarkupLine($"[grey]{Markup.Escape(options.Run)} stopped after its last step but before its summary; training {what} again[/]");
                        Directory.Delete(options.Run, recursive: true);
                    }
                    else
                    {
                        console.MarkupLine($"[grey]resuming {what} at step {earlier.Step} of {template.Steps} ({Markup.Escape(options.Run)})[/]");
                        options = options with { Resume = true };
                    }
                }
                var started = DateTime.UtcNow;
                var summary = await LmTrainer.RunAsync(options, cancellationToken);
                runs[(e, seed)] = summary;
                console.MarkupLine($"[grey]  validation {summary.Validation[^1].Loss:F4}, {summary.TokensPerSecond:N0} tokens/s, {(DateTime.UtcNow - started).TotalSeconds:F0} s[/]");
            }

        // The dense quality each seed's runs are held to: that seed's dense final validation loss.
        var denseFinal = experts.Contains(0) ? seeds.ToDictionary(s => s, s => runs[(0, s)].Validation[^1].Loss) : null;
        var rows = experts.Select(e =>
        {
            var finals = seeds.Select(s => runs[(e, s)].Validation[^1].Loss).ToArray();
            var reach = seeds.Select(s => denseFinal is null ? null
                : runs[(e, s)].Validation.FirstOrDefault(p => p.Loss <= denseFinal[s])?.Step).ToArray();
            var reached = reach.Where(r => r is not null).Select(r => (double)r!.Value).ToArray();
            var curve = runs[(e, seeds[0])].Validation.Select((p, i) =>
                new LmValidationPoint(p.Step, Median(seeds.Select(s => runs[(e, s)].Validation[i].Loss).ToArray()))).ToList();
            return new LmSweepRow(e, seeds, finals, Median(finals), reach,
                reached.Length * 2 > seeds.Length ? Median(reach.Select(r => r is null ? double.PositiveInfinity : (double)r.Value).ToArray()) : null,
                Median(seeds.Select(s => runs[(e, s)].TokensPerSecond).ToArray()), curve);
        }).ToArray();
        var plot = Plots.LmPlots.WriteSweep(Path.Combine(directory, "sweep.png"), rows.Select(r => (r.Experts, (IReadOnlyList<LmValidationPoint>)r.MedianCurve)).ToList(),
            $"validation loss, median of {seeds.Length} seed(s), {template.Steps} steps");
        var result = new LmSweepSummary(template.Steps, rows, plot);
        System.IO.File.WriteAllText(Path.Combine(directory, "sweep.json"), System.Text.Json.JsonSerializer.Serialize(result, CliJson.Options));
        if (json) Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(result, CliJson.Options));
        else Write(console, result);
        return result;
    }

    private static LmSummary ReadSummary(string path)
    {
        try
        {
            return System.Text.Json.JsonSerializer.Deserialize<LmSummary>(File.ReadAllText(path), CliJson.Options)
                ?? throw new System.Text.Json.JsonException("null");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new ArgumentException($"{path} is not the summary of a run ({e.Message}); remove its run directory to train it again", e);
        }
    }

    private static double Median(double[] values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static void Write(IAnsiConsole console, LmSweepSummary result)
    {
        var dense = result.Rows.FirstOrDefault(r => r.Experts == 0);
        var table = new Table().Title($"validation loss at step {result.Steps} (median over seeds)")
            .AddColumn(new TableColumn("experts").RightAligned())
            .AddColumn(new TableColumn("validation loss").RightAligned())
            .AddColumn(new TableColumn("vs dense").RightAligned())
            .AddColumn(new TableColumn("steps to dense's final").RightAligned())
            .AddColumn(new TableColumn("× dense's steps").RightAligned())
            .AddColumn(new TableColumn("tokens/s").RightAligned())
            .AddColumn("per seed");
        foreach (var r in result.Rows)
            table.AddRow(r.Experts == 0 ? "dense" : $"{r.Experts}", $"{r.MedianFinalValidation:F4}",
                dense is null ? "" : $"{r.MedianFinalValidation - dense.MedianFinalValidation:+0.0000;-0.0000;0}",
                r.MedianStepsToDenseFinal is { } s && double.IsFinite(s) ? $"{s:F0}" : "not reached",
                r.MedianStepsToDenseFinal is { } t && double.IsFinite(t) ? $"{t / result.Steps:F2}" : "",
                $"{r.MedianTokensPerSecond:N0}", string.Join(" ", r.FinalValidation.Select(v => $"{v:F4}")));
        console.Write(table);
        console.MarkupLine($"plot: {Markup.Escape(result.Plot)}");
    }
}
