using System.CommandLine;
using MoeCluster.Client;
using Spectre.Console;

namespace MoeCluster.Cli;

/// <summary><c>moe checkpoint list | export | import</c>: what the store holds, and a layer's weights as safetensors.</summary>
public static class CheckpointCommand
{
    public static Command Create() => new("checkpoint", "Lists a layer's checkpoints; exports and imports its weights as safetensors.\n\n" +
        "Example: ./moe checkpoint list ffn-0 --json")
    {
        List(), ExportCommands.Export(), ExportCommands.Import(),
    };

    /// <summary>One checkpoint key of a layer and the versions the store holds.</summary>
    public sealed record Entry(string Layer, string Key, long[] Versions);

    private static Command List()
    {
        var connection = new ClusterConnection();
        var layer = new Argument<string?>("layer") { Description = "The layer (default: every layer)", Arity = ArgumentArity.ZeroOrOne };
        var json = CliJson.Option();
        var command = new Command("list", "Lists the checkpoint versions the store holds for a layer's router and each expert " +
            "(the router's newest is the layer's newest durable version; the store keeps two per key).\n\n" +
            "Example: ./moe checkpoint list ffn-0\n" + ExitCodes.Help) { layer, json };
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            await using var client = await connection.ConnectAsync(parse, cancel);
            var layers = parse.GetValue(layer) is { } one ? [one] : await client.ListLayersAsync();
            var entries = new List<Entry>();
            foreach (var name in layers)
                entries.AddRange((await client.ListCheckpointsAsync(name)).Select(c => new Entry(name, c.Key, c.Versions)));
            if (parse.GetValue(json))
            {
                CliJson.Print(new { Checkpoints = entries });
                return ExitCodes.Ok;
            }
            var table = new Table().AddColumns("layer", "key", "versions stored");
            foreach (var e in entries)
                table.AddRow(Markup.Escape(e.Layer), Markup.Escape(e.Key), e.Versions.Length == 0 ? "[red]none[/]" : string.Join(", ", e.Versions));
            if (entries.Count == 0) AnsiConsole.MarkupLine("[grey]no layers[/]");
            else AnsiConsole.Write(table);
            return ExitCodes.Ok;
        });
        return command;
    }
}
