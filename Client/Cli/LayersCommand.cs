using System.CommandLine;
using MoeCluster.Client;
using Spectre.Console;

namespace MoeCluster.Cli;

/// <summary><c>moe layers create | list | describe | delete</c>.</summary>
public static class LayersCommand
{
    public static Command Create() => new("layers", "Creates, lists, describes and deletes the cluster's MoE layers.\n\n" +
        "Example: ./moe layers list --cluster redis://127.0.0.1:6379")
    {
        CreateLayer(), List(), Describe(), Delete(),
    };

    private static Argument<string> Name(string what) => new("name") { Description = what };

    private static Command CreateLayer()
    {
        var d = new LayerSpec { DModel = 1, DFF = 1, NumExperts = 1 };
        var connection = new ClusterConnection();
        var name = Name("Name of the new layer (A-Z a-z 0-9 . _ -)");
        var dModel = new Option<int>("--d-model") { Description = "Width of the tokens (x is [T, d_model])", Required = true };
        var dFF = new Option<int>("--d-ff") { Description = "Hidden width of each expert's FFN", Required = true };
        var experts = new Option<int>("--experts") { Description = "Number of experts E", Required = true };
        var topK = new Option<int>("--top-k") { Description = "Experts per token", DefaultValueFactory = _ => d.TopK };
        var capacity = new Option<double>("--capacity-factor") { Description = "Capacity factor in training (0: dropless)", DefaultValueFactory = _ => d.CapacityFactor };
        var activation = new Option<ExpertActivation>("--activation") { Description = "Expert activation: Gelu or SwiGlu", DefaultValueFactory = _ => d.Activation };
        var seed = new Option<long>("--seed") { Description = "Seed of the gate and experts", DefaultValueFactory = _ => d.Seed };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "Steps between checkpoints (1: every step)", DefaultValueFactory = _ => d.CheckpointEvery };
        var json = CliJson.Option();
        var command = new Command("create", "Creates a layer and places its experts on free device slots (repeating it with the same spec changes nothing).\n\n" +
            "Example: ./moe layers create ffn-0 --d-model 512 --d-ff 2048 --experts 8 --top-k 2\n" + ExitCodes.Help)
        {
            name, dModel, dFF, experts, topK, capacity, activation, seed, checkpointEvery, json,
        };
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            var spec = new LayerSpec
            {
                DModel = parse.GetValue(dModel),
                DFF = parse.GetValue(dFF),
                NumExperts = parse.GetValue(experts),
                TopK = parse.GetValue(topK),
                CapacityFactor = parse.GetValue(capacity),
                Activation = parse.GetValue(activation),
                Seed = parse.GetValue(seed),
                CheckpointEvery = parse.GetValue(checkpointEvery),
            };
            await using var client = await connection.ConnectAsync(parse, cancel);
            var layer = await client.CreateLayerAsync(parse.GetValue(name)!, spec);
            var summary = LayerSummary.From(await layer.GetStatsAsync());
            if (parse.GetValue(json)) CliJson.Print(summary);
            else Console.WriteLine($"created layer \"{summary.Name}\": {summary.NumExperts} experts on " +
                $"{summary.Experts.Select(e => e.Silo).Distinct().Count()} silo(s), version {summary.Version}");
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command List()
    {
        var connection = new ClusterConnection();
        var json = CliJson.Option();
        var command = new Command("list", "Lists the cluster's layers with their shape, version and tokens routed.\n\n" +
            "Example: ./moe layers list --json\n" + ExitCodes.Help) { json };
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            await using var client = await connection.ConnectAsync(parse, cancel);
            var layers = (await ClusterStatus.ReadAsync(client)).Layers;
            if (parse.GetValue(json))
            {
                CliJson.Print(new { Layers = layers.Select(l => new
                {
                    l.Name, l.Version, l.NumExperts, l.TopK, l.DModel, l.DFF, l.MicroBatches, l.TokensRouted, l.TokensDropped, l.RouterSilo,
                }) });
                return ExitCodes.Ok;
            }
            var table = new Table().AddColumns("layer", "version", "experts", "top-k", "d_model", "d_ff", "tokens routed", "dropped");
            foreach (var l in layers)
                table.AddRow(Markup.Escape(l.Name), l.Version.ToString(), l.NumExperts.ToString(), l.TopK.ToString(),
                    l.DModel.ToString(), l.DFF.ToString(), l.TokensRouted.ToString("N0"), l.TokensDropped.ToString("N0"));
            if (layers.Length == 0) AnsiConsole.MarkupLine("[grey]no layers[/]");
            else AnsiConsole.Write(table);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Describe()
    {
        var connection = new ClusterConnection();
        var name = Name("Name of the layer");
        var json = CliJson.Option();
        var command = new Command("describe", "Shows a layer's whole spec, its version and each expert's silo, device and load.\n\n" +
            "Example: ./moe layers describe ffn-0\n" + ExitCodes.Help) { name, json };
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            await using var client = await connection.ConnectAsync(parse, cancel);
            var stats = await (await client.GetLayerAsync(parse.GetValue(name)!)).GetStatsAsync();
            var summary = LayerSummary.From(stats);
            if (parse.GetValue(json))
            {
                CliJson.Print(new { summary.Name, summary.Version, Spec = stats.Spec, summary.MicroBatches, stats.PendingBatches,
                    summary.TokensRouted, summary.TokensDropped, summary.RouterSilo, summary.Experts, stats.Moves, stats.Replicas });
                return ExitCodes.Ok;
            }
            var spec = new Table().Title($"layer {Markup.Escape(summary.Name)}, version {summary.Version}").AddColumns("setting", "value");
            foreach (var p in typeof(LayerSpec).GetProperties())
                spec.AddRow(p.Name, Markup.Escape(Convert.ToString(p.GetValue(stats.Spec), System.Globalization.CultureInfo.InvariantCulture) ?? "(default)"));
            AnsiConsole.Write(spec);
            AnsiConsole.Write(StatusCommand.ExpertsTable(summary));
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Delete()
    {
        var connection = new ClusterConnection();
        var name = Name("Name of the layer to delete with its experts and checkpoints");
        var command = new Command("delete", "Deletes a layer: its experts, its checkpoints and its router's state.\n\n" +
            "Example: ./moe layers delete ffn-0\n" + ExitCodes.Help) { name };
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            await using var client = await connection.ConnectAsync(parse, cancel);
            var layer = await client.GetLayerAsync(parse.GetValue(name)!);
            await layer.DeleteAsync();
            Console.WriteLine($"deleted layer \"{layer.Name}\"");
            return ExitCodes.Ok;
        });
        return command;
    }
}
