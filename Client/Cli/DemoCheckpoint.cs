using MoeCluster.Client;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Cli;

/// <summary>
/// The demo's model on disk, for fine-tuning: the remote layer as the safetensors file that
/// <c>--export</c> names (what <c>./moe import</c> reads), and the local embedding and head beside it
/// as <c>NAME.local.safetensors</c>, since only the layer lives in the cluster.
/// </summary>
public static class DemoCheckpoint
{
    public static string LocalPath(string layerFile) => Path.ChangeExtension(layerFile, null) + ".local.safetensors";

    /// <summary>Writes the local model beside <paramref name="layerFile"/>; returns its path.</summary>
    public static string WriteLocal(DemoModel model, string layerFile)
    {
        var path = LocalPath(layerFile);
        SafeTensorsFile.Write(path, model.LocalWeights(), new Dictionary<string, string> { ["format"] = "pt" });
        return path;
    }

    /// <summary>
    /// Imports the layer's weights from <paramref name="layerFile"/> (its next step; optimizer
    /// states start fresh) and, when the file beside it exists, the local model. Returns the
    /// layer's version and the local file read, or null when there was none.
    /// </summary>
    public static async Task<(long Version, string? Local)> LoadAsync(RemoteMoeLayer layer, DemoModel model, string layerFile)
    {
        long version;
        using (var content = SafeTensorsFile.Read(layerFile)) version = await layer.ImportWeightsAsync(content.Tensors);
        var local = LocalPath(layerFile);
        if (!File.Exists(local)) return (version, null);
        using var weights = SafeTensorsFile.Read(local);
        model.LoadLocalWeights(weights.Tensors, local);
        return (version, local);
    }
}
