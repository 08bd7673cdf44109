using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using MoeCluster.Client;
using MoeCluster.Client.Rebalancing;

namespace MoeCluster.Cli;

/// <summary>
/// <c>./moe rebalance --layer L [--dry-run]</c>: plans live moves of a layer's experts that lower
/// the max/mean load (tokens routed, or compute time with <c>--by ComputeTime</c>; moving averages
/// per step) across silos, prints the plan, and without
/// <c>--dry-run</c> makes the moves, each at a step boundary of the layer.
/// </summary>
public static class RebalanceCommand
{
    public static Command Create()
    {
        var connection = new ClusterConnection();
        var layer = new Option<string>("--layer") { Description = "Name of the layer", Required = true };
        var dryRun = new Option<bool>("--dry-run") { Description = "Print the plan only; move nothing" };
        var target = new Option<double>("--target") { Description = "Stop once max/mean load across silos is at most this", DefaultValueFactory = _ => 1.05 };
        var json = new Option<bool>("--json") { Description = "Print the plan (and the moves made) as JSON on stdout" };
        var by = new Option<RebalanceMeasure>("--by") { Description = "What load is: Tokens (routed) or ComputeTime (ms), as moving averages per step", DefaultValueFactory = _ => RebalanceMeasure.Tokens };
        var command = new Command("rebalance", "Moves experts of a layer between silos to even out the tokens each silo serves.\n\n" +
            "Example: ./moe rebalance --cluster redis://127.0.0.1:6379 --layer ffn-0 --by ComputeTime --dry-run") { layer, dryRun, target, by, json };
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            await using var client = await MoeClusterClient.ConnectAsync(connection.Options(parse), cancel);
            var remote = await client.GetLayerAsync(parse.GetValue(layer)!);
            var plan = await client.PlanRebalanceAsync(remote, targetRatio: parse.GetValue(target), measure: parse.GetValue(by));
            var moves = parse.GetValue(dryRun) ? [] : await client.ApplyRebalanceAsync(remote, plan);
            if (parse.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(new { plan, moves }, CliJson.Lines)); // enums by name
            else
            {
                foreach (var line in Describe(plan)) Console.WriteLine(line);
                foreach (var m in moves)
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"moved expert {m.Expert} from {m.FromSilo} to {m.ToSilo} in {m.Milliseconds:F0} ms ({m.StateBytes:N0} bytes)"));
            }
            return 0;
        });
        return command;
    }

    public static IEnumerable<string> Describe(RebalancePlan plan)
    {
        yield return string.Create(CultureInfo.InvariantCulture,
            $"layer \"{plan.Layer}\": max/mean load across silos {plan.RatioBefore:F2} → {plan.RatioAfter:F2} with {plan.Moves.Length} move(s)");
        var unit = plan.Measure == RebalanceMeasure.Tokens ? "tokens" : "ms";
        yield return $"  load: {unit} ({plan.Window})";
        foreach (var (silo, load) in plan.LoadBefore)
            yield return string.Create(CultureInfo.InvariantCulture, $"  silo {silo}: {load:N0} → {plan.LoadAfter[silo]:N0} {unit}");
        foreach (var (device, load) in plan.DeviceLoadBefore)
            yield return string.Create(CultureInfo.InvariantCulture, $"  device {device}: {load:N0} {unit}");
        foreach (var m in plan.Moves)
            yield return string.Create(CultureInfo.InvariantCulture, $"  move expert {m.Expert}: {m.FromSilo} → {m.ToSilo} ({m.Load:N0} {unit})");
    }
}
