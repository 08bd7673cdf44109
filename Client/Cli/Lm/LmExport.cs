using MoeCluster.Client;
using static TorchSharp.torch;

namespace MoeCluster.Cli.Lm;

/// <summary>
/// The whole language model as one safetensors file, named as a PyTorch module would name it
/// (docs/lm.md lists the names): the local weights as <see cref="SwitchLm"/> names them and each
/// MoE layer's weights, from the cluster or from this process, as <c>blocks.{i}.ffn.moe.gate</c>
/// ([d_model, E]: logits = x · gate) and <c>blocks.{i}.ffn.moe.experts.{e}.{w1,b1,w2,b2}</c>
/// (torch Linear layout, [out, in]). The metadata holds the config as JSON and the step.
/// </summary>
public static class LmExport
{
    public const string ConfigKey = "moecluster.lm.config";
    public const string StepKey = "moecluster.lm.step";

    public static async Task<string> WriteAsync(string path, SwitchLm model, long step)
    {
        var tensors = model.LocalParameters().ToDictionary(p => p.Key, p => (Tensor)p.Value);
        var fetched = new List<Tensor>();
        try
        {
            for (int i = 0; i < model.Blocks.Count; i++)
            {
                if (model.Blocks[i].Ffn is not ClusterMoeFfn remote) continue;
                foreach (var (name, value) in await remote.Layer.GetWeightsAsync())
                {
                    fetched.Add(value);
                    tensors[$"blocks.{i}.ffn.moe.{name}"] = value;
                }
            }
            SafeTensorsFile.Write(path, tensors, new Dictionary<string, string>
            {
                ["format"] = "pt",
                [ConfigKey] = model.Config.ToJson(),
                [StepKey] = step.ToString(System.Globalization.CultureInfo.InvariantCulture),
            });
        }
        finally
        {
            foreach (var t in fetched) t.Dispose();
        }
        return Path.GetFullPath(path);
    }

    /// <summary>
    /// A model read back from such a file, its MoE layers computed in this process: for
    /// sampling with no cluster. Every tensor of the file must be one of the model's and all of
    /// them there.
    /// </summary>
    public static SwitchLm Load(string path)
    {
        if (!File.Exists(path)) throw new ArgumentException($"model file {path} does not exist; expected the model.safetensors that ./moe lm train writes into its run directory");
        using var content = SafeTensorsFile.Read(path);
        if (!content.Metadata.TryGetValue(ConfigKey, out var json))
            throw new ArgumentException($"{path} has no \"{ConfigKey}\" in its metadata; expected a model exported by ./moe lm train");
        var config = LmConfig.FromJson(json);
        var settings = new LmTrainSettings();
        var model = new SwitchLm(config, block => config.IsMoe(block)
            ? new InProcessMoeFfn(config.LayerSpec(block, settings.Optimizer, 1), $"loaded-{block}")
            : new DenseFfn(config.DModel, config.DFF));
        try
        {
            model.LoadLocalParameters(content.Tensors, "", path);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.eval();
        return model;
    }
}
