using MessagePack;

namespace MoeCluster.Grains.Checkpoints;

/// <summary>One tensor of a checkpoint: raw row-major bytes with dtype and shape.</summary>
[MessagePackObject]
public sealed class TensorRecord
{
    [Key(0)] public string Name { get; set; } = "";
    [Key(1)] public TensorDType DType { get; set; }
    [Key(2)] public long[] Shape { get; set; } = [];
    [Key(3)] public byte[] Data { get; set; } = [];
}

/// <summary>
/// The checkpoint of a router or an expert at one version (steps applied): the layer's spec,
/// the weights and the optimizer state. MessagePack with a schema number, so a newer build can
/// read an older record and an older build refuses a newer one instead of misreading it.
/// </summary>
[MessagePackObject]
public sealed class CheckpointRecord
{
    /// <summary>
    /// 2: routers also record their <see cref="TrainingControls"/> (key 11). 3: routers also record
    /// their experts' ids, the next free id and the number of expert-set changes (keys 12–14).
    /// 4: routers also record how many read-only replicas each expert has (key 15).
    /// Older records read as before: no controls, experts 0..E−1, no changes, no replicas.
    /// </summary>
    public const int CurrentSchema = 4;
    public const string RouterKind = "router";
    public const string ExpertKind = "expert";
    /// <summary>An expert leaving a silo that shuts down: its whole state, mid-step included.</summary>
    public const string HandoffKind = "expert-handoff";

    [Key(0)] public int Schema { get; set; } = CurrentSchema;
    [Key(1)] public string Kind { get; set; } = "";
    [Key(2)] public string Layer { get; set; } = "";
    /// <summary>The expert's index; −1 for the router.</summary>
    [Key(3)] public int Index { get; set; } = -1;
    [Key(4)] public long Version { get; set; }
    /// <summary>The <see cref="LayerSpec"/> as JSON: readable by tools, and immune to field reordering.</summary>
    [Key(5)] public string SpecJson { get; set; } = "";
    [Key(6)] public TensorRecord[] Weights { get; set; } = [];
    /// <summary>TorchSharp's own optimizer state stream (moments and step counts).</summary>
    [Key(7)] public byte[] OptimizerState { get; set; } = [];
    /// <summary>Hand-off only: the gradients accumulated so far in the current step.</summary>
    [Key(8)] public TensorRecord[] Gradients { get; set; } = [];
    /// <summary>Hand-off only: the inputs of training forwards still waiting for their backward, named by batch id.</summary>
    [Key(9)] public TensorRecord[] SavedInputs { get; set; } = [];
    /// <summary>Hand-off only: the incarnation the router knows this expert's step state by.</summary>
    [Key(10)] public string Incarnation { get; set; } = "";
    /// <summary>Router only: the <see cref="TrainingControls"/> in effect, as JSON; empty (schema 1, or none set) means the defaults.</summary>
    [Key(11)] public string ControlsJson { get; set; } = "";
    /// <summary>Router only: the experts' ids in gate-column order; empty (schema ≤ 2) means 0..E−1.</summary>
    [Key(12)] public int[] ExpertIds { get; set; } = [];
    /// <summary>Router only: the id the next added expert gets; 0 (schema ≤ 2) means E.</summary>
    [Key(13)] public int NextExpertId { get; set; }
    /// <summary>Router only: how many expert-set changes (adds, removals) the layer has had.</summary>
    [Key(14)] public long ExpertChanges { get; set; }
    /// <summary>
    /// Router only: expert id → how many read-only replicas it had. A router that comes back from
    /// this record makes them again at its next step; empty (schema ≤ 3, or none) means none.
    /// </summary>
    [Key(15)] public Dictionary<int, int> ReplicaCounts { get; set; } = new();
}
