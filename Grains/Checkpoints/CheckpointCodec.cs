using System.Text.Json;
using MessagePack;

namespace MoeCluster.Grains.Checkpoints;

/// <summary>Encodes checkpoint records, and decodes them with every check that keeps versions from mixing.</summary>
public static class CheckpointCodec
{
    public static string RouterKey(string layer) => $"layers/{layer}/router";
    public static string ExpertKey(string layer, int index) => $"layers/{layer}/experts/{index}";
    public static string HandoffKey(string layer, int index) => $"layers/{layer}/handoffs/{index}";

    /// <summary>The record's MessagePack bytes, in one array of exactly their length (see <see cref="ExactSizeBuffers"/>).</summary>
    public static byte[] Encode(CheckpointRecord record) => ExactSizeBuffers.Write(w => MessagePackSerializer.Serialize(w, record));

    public static string EncodeSpec(LayerSpec spec) => JsonSerializer.Serialize(spec);

    public static LayerSpec DecodeSpec(CheckpointRecord record) =>
        JsonSerializer.Deserialize<LayerSpec>(record.SpecJson)
        ?? throw new CheckpointCorruptException($"checkpoint of {Describe(record)} has no layer spec");

    public static string EncodeControls(TrainingControls controls) => JsonSerializer.Serialize(controls);

    /// <summary>The router's training controls; the defaults for a record that has none (schema 1, or never set).</summary>
    public static TrainingControls DecodeControls(CheckpointRecord record) =>
        record.ControlsJson.Length == 0 ? new TrainingControls()
        : JsonSerializer.Deserialize<TrainingControls>(record.ControlsJson)
          ?? throw new CheckpointCorruptException($"checkpoint of {Describe(record)} has training controls that read as null");

    /// <summary>Decodes the record stored as <paramref name="version"/> of <paramref name="key"/> and checks it is what the key says.</summary>
    public static CheckpointRecord Decode(byte[] bytes, string key, long version, string kind, string layer, int index)
    {
        CheckpointRecord record;
        try
        {
            record = MessagePackSerializer.Deserialize<CheckpointRecord>(bytes);
        }
        catch (MessagePackSerializationException e)
        {
            throw new CheckpointCorruptException($"checkpoint {key} version {version} cannot be decoded: {e.Message}");
        }
        if (record.Schema > CheckpointRecord.CurrentSchema)
            throw new CheckpointCorruptException($"checkpoint {key} version {version} has schema {record.Schema}; this build reads schema ≤ {CheckpointRecord.CurrentSchema}");
        if (record.Kind != kind || record.Layer != layer || record.Index != index || record.Version != version)
            throw new CheckpointCorruptException(
                $"checkpoint {key} version {version} holds {Describe(record)} at version {record.Version}; expected {kind} {index} of layer \"{layer}\"");
        return record;
    }

    /// <summary>An expert's state handed to another activation (a migration) or another expert of the same layer (a split): checks its kind and layer only.</summary>
    public static CheckpointRecord DecodeTransfer(byte[] bytes, string layer, string kind = CheckpointRecord.ExpertKind)
    {
        CheckpointRecord record;
        try
        {
            record = MessagePackSerializer.Deserialize<CheckpointRecord>(bytes);
        }
        catch (MessagePackSerializationException e)
        {
            throw new CheckpointCorruptException($"an expert state sent to layer \"{layer}\" cannot be decoded: {e.Message}");
        }
        if (record.Schema > CheckpointRecord.CurrentSchema || record.Kind != kind || record.Layer != layer)
            throw new CheckpointCorruptException(
                $"an expert state sent to layer \"{layer}\" holds {Describe(record)} (schema {record.Schema}); expected {kind} of that layer, schema ≤ {CheckpointRecord.CurrentSchema}");
        return record;
    }

    private static string Describe(CheckpointRecord r) => $"{r.Kind} {r.Index} of layer \"{r.Layer}\"";
}
