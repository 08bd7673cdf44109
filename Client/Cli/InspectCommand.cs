using System.CommandLine;
using System.Text.Json;
using MoeCluster.Client;
using Spectre.Console;

namespace MoeCluster.Cli;

/// <summary>
/// <c>./moe inspect --layer L</c>: the specialization report of a layer in a running cluster —
/// per expert, the classes and token ids its labelled forwards sent it, their entropy, its top
/// tokens and its drop share — as a table, as JSON, or as a PNG heat map of experts × classes.
/// </summary>
public static class InspectCommand
{
    public static Command Create()
    {
        var connection = new ClusterConnection();
        var layer = new Option<string>("--layer") { Description = "Name of the layer", Required = true };
        var json = new Option<bool>("--json") { Description = "Print the report as JSON on stdout" };
        var plot = new Option<string?>("--plot") { Description = "Write the heat map of classes per expert as a PNG file" };
        var command = new Command("inspect", "Shows what each expert of a layer receives: classes, top tokens, routing entropy, drop share.\n" +
            "Counts come from forwards that carried TokenLabels (the demo labels its evaluation tokens).\n\n" +
            "Example: ./moe inspect --cluster redis://127.0.0.1:6379 --layer demo --plot demo-experts.png") { layer, json, plot };
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            await using var client = await MoeClusterClient.ConnectAsync(connection.Options(parse), cancel);
            var remote = await client.GetLayerAsync(parse.GetValue(layer)!);
            var report = await remote.GetSpecializationAsync();
            if (parse.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(report, CliJson.Options));
            else SpecializationTable.Write(AnsiConsole.Console, report);
            if (parse.GetValue(plot) is { } path)
            {
                Charts.SpecializationHeatMap(report, path);
                Console.Error.WriteLine($"wrote the heat map of classes per expert to {path}");
            }
            return 0;
        });
        return command;
    }
}
