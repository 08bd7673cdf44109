using System.CommandLine;
using System.Text.Json;
using MoeCluster.Client;

namespace MoeCluster.Cli;

/// <summary>
/// <c>./moe experts add|split|remove --layer L</c>: changes the expert count of a layer in a
/// running cluster at its step boundary (the layer refuses while a step is under way), and prints
/// the layer's expert ids after the change. <c>experts replicate|unreplicate</c> gives an expert
/// read-only inference replicas, or takes them away.
/// </summary>
public static class ExpertsCommand
{
    public static Command Create()
    {
        var command = new Command("experts", "Adds, splits or removes experts of a layer while it trains, at a step boundary.\n\n" +
            "Examples: ./moe experts add --cluster redis://127.0.0.1:6379 --layer ffn-0 --count 2\n" +
            "          ./moe experts split --cluster redis://127.0.0.1:6379 --layer ffn-0 --expert 3\n" +
            "          ./moe experts remove --cluster redis://127.0.0.1:6379 --layer ffn-0 --ids 0,5\n" +
            "          ./moe experts replicate --cluster redis://127.0.0.1:6379 --layer ffn-0 --expert 3 --count 2");
        var count = new Option<int>("--count") { Description = "How many experts to add (split: how many copies)", DefaultValueFactory = _ => 1 };
        var expert = new Option<int>("--expert") { Description = "Id of the expert to split", Required = true };
        var ids = new Option<string>("--ids") { Description = "Comma-separated ids of the experts to remove", Required = true };
        command.Subcommands.Add(Sub("add", "Adds fresh experts (weights from seed, layer and their new ids; fresh gate columns).\n\n" +
            "Example: ./moe experts add --cluster redis://127.0.0.1:6379 --layer ffn-0 --count 2 --json\n" + ExitCodes.Help, [count],
            (layer, parse) => layer.AddExpertsAsync(parse.GetValue(count))));
        command.Subcommands.Add(Sub("split", "Adds copies of a live expert: its weights, optimizer state and gate column.\n\n" +
            "Example: ./moe experts split --cluster redis://127.0.0.1:6379 --layer ffn-0 --expert 3\n" + ExitCodes.Help, [expert, count],
            (layer, parse) => layer.SplitExpertAsync(parse.GetValue(expert), parse.GetValue(count))));
        command.Subcommands.Add(Sub("remove", "Removes experts by id; the others keep their ids.\n\n" +
            "Example: ./moe experts remove --cluster redis://127.0.0.1:6379 --layer ffn-0 --ids 0,5\n" + ExitCodes.Help, [ids],
            (layer, parse) => layer.RemoveExpertsAsync(ParseIds(parse.GetValue(ids)!))));
        var hot = new Option<int>("--expert") { Description = "Id of the expert", Required = true };
        var copies = new Option<int>("--count") { Description = "How many more replicas", DefaultValueFactory = _ => 1 };
        command.Subcommands.Add(LayerAction("replicate", "Gives an expert read-only replicas on other devices that share its inference tokens.\n" +
            "Example: ./moe experts replicate --cluster redis://127.0.0.1:6379 --layer ffn-0 --expert 3 --count 2\n" + ExitCodes.Help, [hot, copies],
            async (layer, parse) => (object)await layer.ReplicateExpertAsync(parse.GetValue(hot), parse.GetValue(copies)),
            (layer, parse, result) => $"expert {parse.GetValue(hot)} of layer \"{layer}\" has {((ExpertReplica[])result).Length} replica(s): " +
                string.Join(", ", ((ExpertReplica[])result).Select(r => $"{r.Placement.Silo} {r.Placement.Device} (version {r.Version})"))));
        command.Subcommands.Add(LayerAction("unreplicate", "Removes every replica of an expert.\n" +
            "Example: ./moe experts unreplicate --cluster redis://127.0.0.1:6379 --layer ffn-0 --expert 3\n" + ExitCodes.Help, [hot],
            async (layer, parse) => (object)new { removed = await layer.RemoveReplicasAsync(parse.GetValue(hot)) },
            (layer, parse, _) => $"removed the replicas of expert {parse.GetValue(hot)} of layer \"{layer}\""));
        return command;
    }

    /// <summary>A sub-command that acts on one layer and prints what came back (JSON with --json).</summary>
    private static Command LayerAction(string name, string description, Option[] options, Func<RemoteMoeLayer, ParseResult, Task<object>> act,
        Func<string, ParseResult, object, string> describe)
    {
        var connection = new ClusterConnection();
        var layer = new Option<string>("--layer") { Description = "Name of the layer", Required = true };
        var json = new Option<bool>("--json") { Description = "Print the result as JSON on stdout" };
        var command = new Command(name, description) { layer, json };
        foreach (var option in options) command.Options.Add(option);
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            await using var client = await MoeClusterClient.ConnectAsync(connection.Options(parse), cancel);
            var remote = await client.GetLayerAsync(parse.GetValue(layer)!);
            var result = await act(remote, parse);
            Console.WriteLine(parse.GetValue(json) ? JsonSerializer.Serialize(result, CliJson.Options) : describe(remote.Name, parse, result));
            return 0;
        });
        return command;
    }

    private static Command Sub(string name, string description, Option[] options, Func<RemoteMoeLayer, ParseResult, Task<ExpertSetChange>> change) =>
        LayerAction(name, description, options, async (layer, parse) => await change(layer, parse),
            (layer, _, result) => Describe(layer, (ExpertSetChange)result));

    public static string Describe(string layer, ExpertSetChange change) =>
        (change.Added.Length > 0 ? $"added expert(s) {string.Join(", ", change.Added)} to" : $"removed expert(s) {string.Join(", ", change.Removed)} from") +
        $" layer \"{layer}\" at version {change.Version}; its {change.ExpertIds.Length} experts are now {Ids(change.ExpertIds)}";

    private static string Ids(int[] ids) => ids.Length <= 32 ? string.Join(", ", ids) : $"{string.Join(", ", ids.Take(16))}, … {ids[^1]}";

    public static int[] ParseIds(string text) => text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
        .Select(t => int.TryParse(t, out var id) && id >= 0 ? id : throw new ArgumentException($"expert id \"{t}\" is not valid; expected comma-separated ids ≥ 0, e.g. 0,5"))
        .ToArray();
}
