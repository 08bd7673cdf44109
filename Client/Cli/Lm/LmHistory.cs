using System.Text.Json;
using System.Text.Json.Serialization;

namespace MoeCluster.Cli.Lm;

/// <summary>One validation loss: the mean next-byte cross-entropy (nats) over the validation windows.</summary>
public sealed record LmValidationPoint([property: JsonPropertyName("step")] long Step, [property: JsonPropertyName("loss")] double Loss);

/// <summary>A run's losses so far, kept in its checkpoints so that a resumed run reports the whole run.</summary>
public sealed class LmHistory
{
    /// <summary>Training cross-entropy of each step, step 1 first.</summary>
    [JsonPropertyName("train")] public List<double> Train { get; init; } = [];
    [JsonPropertyName("validation")] public List<LmValidationPoint> Validation { get; init; } = [];
    /// <summary>Seconds spent in training steps (forward, backward, optimizer), without validation and checkpoints.</summary>
    [JsonPropertyName("train_seconds")] public double TrainSeconds { get; set; }

    public string ToJson() => JsonSerializer.Serialize(this);
    public static LmHistory FromJson(string json) => JsonSerializer.Deserialize<LmHistory>(json)!;
}
