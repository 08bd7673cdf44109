using System.CommandLine;
using System.Text.Json;
using MoeCluster.Client;

namespace MoeCluster.Cli;

/// <summary>
/// <c>./moe export</c> and <c>./moe import</c>: a layer's weights as a safetensors file that
/// PyTorch loads with <c>safetensors.torch.load_file</c>. Tensor names: <c>gate</c> [d_model, E]
/// (logits = x @ gate), and per expert <c>experts.{e}.w1</c> [d_ff, d_model], <c>b1</c> [d_ff],
/// <c>w2</c> [d_model, d_ff], <c>b2</c> [d_model] (GELU) or <c>w1</c>, <c>w2</c>, <c>w3</c> (SwiGLU),
/// in torch.nn.Linear's [out, in] layout.
/// </summary>
public static class ExportCommands
{
    public const string LayerKey = "moecluster.layer";
    public const string VersionKey = "moecluster.version";
    public const string SpecKey = "moecluster.spec";

    public static Command Export()
    {
        var connection = new ClusterConnection();
        var layer = new Option<string>("--layer") { Description = "Name of the layer", Required = true };
        var output = new Option<string>("--out") { Description = "The safetensors file to write", Required = true };
        var command = new Command("export", "Writes a layer's router and expert weights as a safetensors file.\n\n" +
            "Example: ./moe export --cluster redis://127.0.0.1:6379 --layer ffn-0 --out ffn-0.safetensors\n" + ExitCodes.Help) { layer, output };
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            await using var client = await connection.ConnectAsync(parse, cancel);
            var path = parse.GetValue(output)!;
            var version = await WriteAsync(await client.GetLayerAsync(parse.GetValue(layer)!), path);
            Console.WriteLine($"exported layer \"{parse.GetValue(layer)}\" at version {version} to {path}");
            return 0;
        });
        return command;
    }

    public static Command Import()
    {
        var connection = new ClusterConnection();
        var layer = new Option<string>("--layer") { Description = "Name of the layer (it must exist with the file's shapes)", Required = true };
        var input = new Option<string>("--in") { Description = "The safetensors file to read", Required = true };
        var command = new Command("import", "Replaces a layer's weights with those of a safetensors file, as its next step; optimizer states start fresh.\n\n" +
            "Example: ./moe import --cluster redis://127.0.0.1:6379 --layer ffn-0 --in ffn-0.safetensors\n" + ExitCodes.Help) { layer, input };
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            var path = parse.GetValue(input)!;
            // A missing file is bad input (exit 2), not a failed call to the cluster.
            if (!File.Exists(path)) throw new ArgumentException($"--in {path} does not exist; expected a safetensors file written by export");
            await using var client = await connection.ConnectAsync(parse, cancel);
            var remote = await client.GetLayerAsync(parse.GetValue(layer)!);
            using var content = SafeTensorsFile.Read(path);
            var version = await remote.ImportWeightsAsync(content.Tensors);
            Console.WriteLine($"imported {content.Tensors.Count} tensors into layer \"{remote.Name}\"; it is now at version {version}");
            return 0;
        });
        return command;
    }

    /// <summary>Writes the layer's weights to <paramref name="path"/>; returns the version written.</summary>
    public static async Task<long> WriteAsync(RemoteMoeLayer layer, string path)
    {
        var version = await layer.GetVersionAsync();
        var weights = await layer.GetWeightsAsync();
        try
        {
            SafeTensorsFile.Write(path, weights, new Dictionary<string, string>
            {
                ["format"] = "pt",
                [LayerKey] = layer.Name,
                [VersionKey] = version.ToString(System.Globalization.CultureInfo.InvariantCulture),
                [SpecKey] = JsonSerializer.Serialize(layer.Spec),
            });
        }
        finally
        {
            foreach (var w in weights.Values) w.Dispose();
        }
        return version;
    }
}
