using System.Text.Json;
using MoeCluster.Client;
using MoeCluster.Grains.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Cli.Lm;

/// <summary>
/// A run's own checkpoint, one file written whole (beside, then renamed over the last): the
/// weights that live in this process, their AdamW state, the data position (the step), the
/// losses so far, the config and settings, and the version of every cluster layer at that step.
/// The layers keep their weights and optimizer states in the cluster's checkpoint store, written
/// at the same steps and made durable before this file is; resuming takes each layer back to
/// the version named here (<see cref="MoeCluster.Client.RemoteMoeLayer.RestoreAsync"/>), so the
/// record and the layers are always one consistent state, whatever the moment a run was killed.
/// </summary>
public sealed record LmCheckpoint(
    LmConfig Config, LmTrainSettings Settings, long Step, Dictionary<string, long> LayerVersions, LmHistory History)
{
    public const string FileName = "checkpoint.safetensors";
    private const string Format = "moecluster-lm-checkpoint";
    private const string OptimizerTensor = "optimizer.state";
    private const string LocalPrefix = "model.";

    public static string PathIn(string run) => System.IO.Path.Combine(run, FileName);

    public void Write(string path, SwitchLm model, optim.Optimizer optimizer)
    {
        var tensors = model.LocalParameters().ToDictionary(p => LocalPrefix + p.Key, p => (Tensor)p.Value);
        using var state = tensor(ModelState.CaptureOptimizer(optimizer));
        tensors[OptimizerTensor] = state;
        SafeTensorsFile.Write(path, tensors, new Dictionary<string, string>
        {
            ["format"] = Format,
            ["config"] = Config.ToJson(),
            ["settings"] = Settings.ToJson(),
            ["step"] = Step.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["layers"] = JsonSerializer.Serialize(LayerVersions),
            ["history"] = History.ToJson(),
        });
    }

    /// <summary>Reads the record's metadata; <see cref="Restore"/> then loads its tensors into a model built from it.</summary>
    public static LmCheckpoint Read(string path)
    {
        using var content = SafeTensorsFile.Read(path);
        var m = content.Metadata;
        if (!m.TryGetValue("format", out var format) || format != Format)
            throw new ArgumentException($"{path} is not a checkpoint of ./moe lm train (format \"{format}\"; expected \"{Format}\")");
        return new LmCheckpoint(LmConfig.FromJson(m["config"]), LmTrainSettings.FromJson(m["settings"]),
            long.Parse(m["step"], System.Globalization.CultureInfo.InvariantCulture),
            JsonSerializer.Deserialize<Dictionary<string, long>>(m["layers"])!, LmHistory.FromJson(m["history"]));
    }

    /// <summary>Copies the record's local weights and optimizer state into <paramref name="model"/> and <paramref name="optimizer"/>, bit for bit.</summary>
    public static void Restore(string path, SwitchLm model, optim.Optimizer optimizer)
    {
        using var content = SafeTensorsFile.Read(path);
        model.LoadLocalParameters(content.Tensors, LocalPrefix, path);
        ModelState.RestoreOptimizer(optimizer, content.Tensors[OptimizerTensor].data<byte>().ToArray(), $"the model in {path}");
    }
}
