using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Spectre.Console;

namespace MoeCluster.Cli;

/// <summary>One point of a sweep: the demo trained with <see cref="Experts"/> experts.</summary>
public sealed record SweepPoint(
    [property: JsonPropertyName("experts")] int Experts,
    [property: JsonPropertyName("initial_loss")] double InitialLoss,
    [property: JsonPropertyName("final_loss")] double FinalLoss,
    [property: JsonPropertyName("accuracy")] double Accuracy,
    [property: JsonPropertyName("dropped")] long Dropped,
    [property: JsonPropertyName("seconds")] double Seconds);

/// <summary>What <c>./moe sweep --json</c> prints.</summary>
public sealed record SweepSummary(
    [property: JsonPropertyName("top_k")] int TopK,
    [property: JsonPropertyName("steps")] int Steps,
    [property: JsonPropertyName("points")] SweepPoint[] Points,
    [property: JsonPropertyName("plot")] string? Plot);

/// <summary>
/// <c>./moe sweep --experts 2,8,32,128 --steps N</c>: trains the demo model once per expert count
/// at the same top-k — the same compute per token, more parameters — each on a fresh embedded
/// cluster with the same seed and data, then prints and plots the final loss against the
/// number of experts. Switch Transformer asks how many experts a problem wants; this measures it
/// for yours.
/// </summary>
public static class SweepCommand
{
    public static Command Create()
    {
        var experts = new Option<string>("--experts") { Description = "Expert counts to train, comma-separated", DefaultValueFactory = _ => "2,8,32,128" };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps per run", DefaultValueFactory = _ => 100 };
        var topK = new Option<int>("--top-k") { Description = "Experts per token, the same in every run", DefaultValueFactory = _ => 2 };
        var silos = new Option<int>("--silos") { Description = "Silos of each run's embedded cluster", DefaultValueFactory = _ => 1 };
        var batch = new Option<int>("--batch") { Description = "Tokens per step", DefaultValueFactory = _ => new DemoOptions().BatchTokens };
        var seed = new Option<long>("--seed") { Description = "Seed of weights and data, the same in every run", DefaultValueFactory = _ => 1 };
        var json = new Option<bool>("--json") { Description = "Print only a JSON summary (top_k, steps, points: experts, final_loss, …) on stdout" };
        var plot = new Option<string>("--plot") { Description = "The PNG file of final loss against experts", DefaultValueFactory = _ => "moe-sweep.png" };
        var command = new Command("sweep", "Trains the demo model for each expert count at the same top-k, then prints and plots final loss against experts.\n\n" +
            "Example: ./moe sweep --experts 2,8,32,128 --steps 100") { experts, steps, topK, silos, batch, seed, json, plot };
        command.SetAction(async (parse, cancel) =>
        {
            var counts = ParseCounts(parse.GetValue(experts)!);
            var k = parse.GetValue(topK);
            if (counts.Any(e => e < k)) throw new ArgumentException($"--experts has {counts.Min()}, fewer than --top-k {k}; every run needs at least k experts");
            var console = parse.GetValue(json) ? AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }) : AnsiConsole.Console;
            var points = new List<SweepPoint>();
            foreach (var e in counts)
            {
                console.MarkupLine($"[grey]training with {e} experts, top-{k}…[/]");
                var silosPerRun = parse.GetValue(silos);
                var summary = await DemoRunner.RunAsync(new DemoOptions
                {
                    Experts = e, TopK = k, Steps = parse.GetValue(steps), Silos = silosPerRun,
                    ExpertsPerDevice = (e + silosPerRun - 1) / silosPerRun,
                    BatchTokens = parse.GetValue(batch), Seed = parse.GetValue(seed), Quiet = true,
                }, cancel);
                points.Add(new SweepPoint(e, summary.InitialLoss, summary.FinalLoss, summary.Accuracy, summary.Dropped, summary.Seconds));
            }
            var path = parse.GetValue(plot)!;
            Charts.LossAgainstExperts(points.Select(p => (p.Experts, p.FinalLoss)).ToList(), k, parse.GetValue(steps), path);
            var result = new SweepSummary(k, parse.GetValue(steps), points.ToArray(), path);
            if (parse.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(result));
            else Write(console, result);
            return 0;
        });
        return command;
    }

    private static int[] ParseCounts(string text)
    {
        var counts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(t =>
            int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var e) && e >= 1 ? e
            : throw new ArgumentException($"--experts has \"{t}\"; expected positive expert counts such as 2,8,32,128")).ToArray();
        if (counts.Length == 0) throw new ArgumentException("--experts is empty; expected expert counts such as 2,8,32,128");
        return counts.Distinct().Order().ToArray();
    }

    private static void Write(IAnsiConsole console, SweepSummary result)
    {
        var table = new Table().Title($"final loss against experts (top-{result.TopK}, {result.Steps} steps each)")
            .AddColumn(new TableColumn("experts").RightAligned())
            .AddColumn(new TableColumn("initial loss").RightAligned())
            .AddColumn(new TableColumn("final loss").RightAligned())
            .AddColumn(new TableColumn("accuracy").RightAligned())
            .AddColumn(new TableColumn("dropped").RightAligned())
            .AddColumn(new TableColumn("seconds").RightAligned());
        foreach (var p in result.Points)
            table.AddRow($"{p.Experts}", $"{p.InitialLoss:F4}", $"{p.FinalLoss:F4}", $"{p.Accuracy:P1}", $"{p.Dropped:N0}", $"{p.Seconds:F1}");
        console.Write(table);
        console.MarkupLine($"wrote the plot to {Markup.Escape(result.Plot ?? "")}");
    }
}
