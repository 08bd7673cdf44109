using System.Text.Json.Serialization;
using Spectre.Console;

namespace MoeCluster.Cli.Lm;

/// <summary>One setup of <c>./moe lm bench</c>.</summary>
public sealed record LmBenchRow(
    [property: JsonPropertyName("setup")] string Setup,
    [property: JsonPropertyName("steps")] long Steps,
    [property: JsonPropertyName("tokens")] long Tokens,
    [property: JsonPropertyName("seconds")] double Seconds,
    [property: JsonPropertyName("tokens_per_second")] double TokensPerSecond);

/// <summary>What <c>./moe lm bench --json</c> prints.</summary>
public sealed record LmBenchSummary(
    [property: JsonPropertyName("rows")] LmBenchRow[] Rows,
    [property: JsonPropertyName("cluster_over_in_process")] double Ratio,
    [property: JsonPropertyName("target")] double Target,
    [property: JsonPropertyName("met")] bool Met);

/// <summary>
/// <c>./moe lm bench</c>: the LM's training throughput with its MoE layers on the cluster against
/// the same model (same weights, same data) with the layers computed in this process by the
/// reference layer, measured in one run: the two train in alternating rounds of steps, so that
/// the machine's noise falls on both, after one warm-up round each that is not timed.
/// </summary>
public static class LmBench
{
    public const double Target = 0.8;

    public static async Task<LmBenchSummary> RunAsync(LmTrainOptions template, int rounds, int stepsPerRound, bool json, CancellationToken cancellationToken)
    {
        if (rounds < 1 || stepsPerRound < 1) throw new ArgumentException($"--rounds {rounds} and --steps-per-round {stepsPerRound}: expected at least 1 each");
        if (template.Config.Experts == 0) throw new ArgumentException("--experts is 0; the benchmark compares MoE layers on the cluster with in-process ones, so it needs at least 2");
        var console = json ? AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }) : AnsiConsole.Console;
        var root = Directory.CreateTempSubdirectory("moe-lm-bench-").FullName;
        try
        {
            var steps = (rounds + 1) * stepsPerRound;
            void Log(string line) => console.MarkupLine($"[grey]{Markup.Escape(line)}[/]");
            await using var cluster = await LmSession.StartAsync(template with { Steps = steps, Run = Path.Combine(root, "cluster") }, Log, cancellationToken);
            await using var local = await LmSession.StartAsync(template with
            {
                Steps = steps, Run = Path.Combine(root, "in-process"), Settings = template.Settings with { InProcess = true }, ViaGateways = false,
            }, Log, cancellationToken);
            var timed = new Dictionary<LmSession, (long Steps, double Seconds)> { [cluster] = (0, 0), [local] = (0, 0) };
            for (int round = 0; round <= rounds; round++)
                foreach (var session in new[] { cluster, local })
                {
                    var before = session.History.TrainSeconds;
                    for (int s = 0; s < stepsPerRound; s++)
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        await session.TrainStepAsync();
                    }
                    if (round == 0) continue; // warm-up: JIT, first allocations, expert placement
                    var (n, t) = timed[session];
                    timed[session] = (n + stepsPerRound, t + session.History.TrainSeconds - before);
                    Log($"round {round}: {(session == cluster ? "cluster" : "in-process")} {stepsPerRound * session.TokensPerStep / (session.History.TrainSeconds - before):N0} tokens/s");
                }
            LmBenchRow Row(string name, LmSession s) =>
                new(name, timed[s].Steps, timed[s].Steps * s.TokensPerStep, timed[s].Seconds, timed[s].Steps * s.TokensPerStep / timed[s].Seconds);
            var rows = new[] { Row("in-process MoE layers", local), Row($"MoE layers on {template.Silos} embedded silo(s){(template.ViaGateways ? ", via gateways" : "")}", cluster) };
            var ratio = rows[1].TokensPerSecond / rows[0].TokensPerSecond;
            var summary = new LmBenchSummary(rows, ratio, Target, ratio >= Target);
            if (json) Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(summary, CliJson.Options));
            else
            {
                var table = new Table().Title($"LM training throughput ({template.Config.Experts} experts, {cluster.TokensPerStep} tokens per step)")
                    .AddColumn("setup").AddColumn(new TableColumn("steps").RightAligned()).AddColumn(new TableColumn("seconds").RightAligned())
                    .AddColumn(new TableColumn("tokens/s").RightAligned());
                foreach (var r in rows) table.AddRow(Markup.Escape(r.Setup), $"{r.Steps}", $"{r.Seconds:F2}", $"{r.TokensPerSecond:N0}");
                console.Write(table);
                console.MarkupLine($"cluster / in-process: {ratio:F3} (target ≥ {Target}: {(summary.Met ? "met" : "not met")})");
            }
            return summary;
        }
        finally
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { }
        }
    }
}
