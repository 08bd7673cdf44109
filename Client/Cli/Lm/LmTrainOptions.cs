using System.Text.Json;
using System.Text.Json.Serialization;
using MoeCluster.Client;

namespace MoeCluster.Cli.Lm;

/// <summary>How a run trains, kept in its checkpoints: a resumed run trains exactly as it began.</summary>
public sealed record LmTrainSettings
{
    /// <summary>Windows of context bytes per step.</summary>
    [JsonPropertyName("batch")] public int Batch { get; init; } = 8;
    [JsonPropertyName("learning_rate")] public double LearningRate { get; init; } = 1e-3;
    /// <summary>Steps between validation losses.</summary>
    [JsonPropertyName("eval_every")] public int EvalEvery { get; init; } = 100;
    /// <summary>Validation windows per validation loss, spread over the held-out text.</summary>
    [JsonPropertyName("eval_windows")] public int EvalWindows { get; init; } = 64;
    /// <summary>Steps between the run's checkpoints (the model's record and the layers' own).</summary>
    [JsonPropertyName("checkpoint_every")] public int CheckpointEvery { get; init; } = 100;
    /// <summary>The cluster layers are named PREFIX-ffn-BLOCK.</summary>
    [JsonPropertyName("layer_prefix")] public string LayerPrefix { get; init; } = "lm";
    /// <summary>The MoE layers computed in this process by the reference layer instead of in the cluster.</summary>
    [JsonPropertyName("in_process")] public bool InProcess { get; init; }

    public LmTrainSettings Validate()
    {
        if (Batch < 1) throw new ArgumentException($"--batch is {Batch}; expected at least 1");
        if (!(LearningRate > 0) || !double.IsFinite(LearningRate)) throw new ArgumentException($"--lr is {LearningRate}; expected a positive number");
        if (EvalEvery < 1) throw new ArgumentException($"--eval-every is {EvalEvery}; expected at least 1");
        if (EvalWindows < 1) throw new ArgumentException($"--eval-windows is {EvalWindows}; expected at least 1");
        if (CheckpointEvery < 1) throw new ArgumentException($"--checkpoint-every is {CheckpointEvery}; expected at least 1");
        return this;
    }

    /// <summary>The optimizer of every part: AdamW with these settings, in this process and in the layers alike.</summary>
    public OptimizerSpec Optimizer => new() { Kind = OptimizerKind.AdamW, LearningRate = LearningRate };

    public string ToJson() => JsonSerializer.Serialize(this);
    public static LmTrainSettings FromJson(string json) => JsonSerializer.Deserialize<LmTrainSettings>(json)!.Validate();
}

/// <summary>What <c>./moe lm train</c> is asked to do.</summary>
public sealed record LmTrainOptions
{
    public LmConfig Config { get; init; } = new();
    public LmTrainSettings Settings { get; init; } = new();
    public int Steps { get; init; } = 2000;
    /// <summary>The run's directory: its checkpoint, the embedded cluster's store, the exported model, the plot.</summary>
    public string Run { get; init; } = "lm-run";
    /// <summary>Continue the run in <see cref="Run"/> from its checkpoint (its config and settings; <see cref="Steps"/> may grow).</summary>
    public bool Resume { get; init; }
    public int Silos { get; init; } = 2;
    /// <summary>Train against this running cluster instead of starting one in-process.</summary>
    public MoeClientOptions? Cluster { get; init; }
    /// <summary>
    /// With the embedded cluster: connect through the silos' gateways (loopback TCP, as to
    /// remote silos) instead of calling through the first silo's co-hosted client.
    /// </summary>
    public bool ViaGateways { get; init; }
    /// <summary>libtorch's threads in this process (null: its default); 1 makes runs repeat bit for bit.</summary>
    public int? Threads { get; init; }
    public string TextDirectory { get; init; } = FortuneText.DefaultDirectory;
    public bool Json { get; init; }
    /// <summary>No console output at all (a sweep runs many trainings).</summary>
    public bool Quiet { get; init; }
}
