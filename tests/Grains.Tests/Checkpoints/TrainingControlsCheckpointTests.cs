using MessagePack;
using MoeCluster.Grains.Checkpoints;
using Xunit;

namespace MoeCluster.Grains.Tests.Checkpoints;

/// <summary>A router's training controls in its checkpoint record (schema 2), and schema 1 records still reading.</summary>
public class TrainingControlsCheckpointTests
{
    /// <summary>A router record as schema 1 wrote it: keys 0–10, no controls.</summary>
    [MessagePackObject]
    public sealed class SchemaOneRecord
    {
        [Key(0)] public int Schema { get; set; } = 1;
        [Key(1)] public string Kind { get; set; } = CheckpointRecord.RouterKind;
        [Key(2)] public string Layer { get; set; } = "ffn";
        [Key(3)] public int Index { get; set; } = -1;
        [Key(4)] public long Version { get; set; } = 7;
        [Key(5)] public string SpecJson { get; set; } = CheckpointCodec.EncodeSpec(new LayerSpec { DModel = 4, DFF = 8, NumExperts = 2 });
        [Key(6)] public TensorRecord[] Weights { get; set; } = [];
        [Key(7)] public byte[] OptimizerState { get; set; } = [];
        [Key(8)] public TensorRecord[] Gradients { get; set; } = [];
        [Key(9)] public TensorRecord[] SavedInputs { get; set; } = [];
        [Key(10)] public string Incarnation { get; set; } = "";
    }

    [Fact]
    public void A_schema_one_router_record_reads_with_default_controls()
    {
        var bytes = MessagePackSerializer.Serialize(new SchemaOneRecord());
        var record = CheckpointCodec.Decode(bytes, "layers/ffn/router", 7, CheckpointRecord.RouterKind, "ffn", -1);
        Assert.Equal(1, record.Schema);
        Assert.Equal(2, CheckpointCodec.DecodeSpec(record).NumExperts);
        var controls = CheckpointCodec.DecodeControls(record);
        Assert.False(controls.FreezeRouter);
        Assert.False(controls.FreezeExperts);
        Assert.Empty(controls.FrozenExperts);
        Assert.Null(controls.RouterLearningRate);
        Assert.Empty(controls.ExpertLearningRateMultipliers);
        Assert.Empty(record.ReplicaCounts); // schema 4's key: an older record has no replicas
    }

    [Fact]
    public void Controls_round_trip_through_a_router_record()
    {
        var controls = new TrainingControls
        {
            FreezeRouter = true, FrozenExperts = [1, 5], RouterLearningRate = 3e-4,
            ExpertLearningRateMultipliers = new Dictionary<int, double> { [0] = 0.5, [3] = 2 },
        };
        var written = new CheckpointRecord { Kind = CheckpointRecord.RouterKind, Layer = "ffn", Version = 3, ControlsJson = CheckpointCodec.EncodeControls(controls) };
        var record = CheckpointCodec.Decode(CheckpointCodec.Encode(written), "layers/ffn/router", 3, CheckpointRecord.RouterKind, "ffn", -1);
        Assert.Equal(CheckpointRecord.CurrentSchema, record.Schema);
        var read = CheckpointCodec.DecodeControls(record);
        Assert.True(read.FreezeRouter);
        Assert.False(read.FreezeExperts);
        Assert.Equal([1, 5], read.FrozenExperts);
        Assert.Equal(3e-4, read.RouterLearningRate);
        Assert.Equal(controls.ExpertLearningRateMultipliers.OrderBy(p => p.Key), read.ExpertLearningRateMultipliers.OrderBy(p => p.Key));
        Assert.True(read.IsExpertFrozen(5));
        Assert.Equal(2, read.ExpertMultiplier(3));
        Assert.Equal(1, read.ExpertMultiplier(2));
    }
}
