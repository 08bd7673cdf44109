using MessagePack;
using MoeCluster.Grains.Numerics;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Checkpoints;

/// <summary>
/// An expert's checkpoint encoded straight from its live parameters and optimizer: the bytes that
/// <see cref="CheckpointCodec.Encode"/> writes for the same state captured into a record first
/// (<c>LiveStateEncoderTests</c> compares them), in one array of exactly their length, without the
/// captured copy. With a checkpoint at every step (the default) each expert of a d 512 / d_ff 2048
/// layer captured 24 MiB and then encoded 24 MiB more per step; this writes the 24 MiB once.
/// It reads the tensors while it runs, so it runs where they cannot change: on the expert's
/// compute queue, between steps. A first pass measures (lengths only, no bytes copied), the
/// second writes; the optimizer's state streams straight into its place in the array.
/// </summary>
internal static class LiveStateEncoder
{
    /// <param name="header">
    /// The record's other fields (kind, layer, index, version, spec…); its <see cref="CheckpointRecord.Weights"/>
    /// and <see cref="CheckpointRecord.OptimizerState"/> must be empty: they come from <paramref name="weights"/> and <paramref name="optimizer"/>.
    /// </param>
    public static byte[] Encode(CheckpointRecord header, IEnumerable<(string Name, Parameter Parameter)> weights, optim.Optimizer optimizer)
    {
        if (header.Weights.Length > 0 || header.OptimizerState.Length > 0)
            throw new ArgumentException("the header's weights and optimizer state must be empty: they are read from the live tensors", nameof(header));
        using var scope = NewDisposeScope();
        // Contiguous CPU tensors: aliases of the parameters themselves on a CPU expert.
        var sources = weights.Select(w => (w.Name, Tensor: w.Parameter.detach().to(CPU).contiguous())).ToList();
        var optimizerCount = new ExactSizeBuffers.CountingStream();
        ModelState.SaveOptimizer(optimizer, optimizerCount);
        var optimizerBytes = checked((int)optimizerCount.Count);

        var measure = new ExactSizeBuffers.CountingBufferWriter();
        var counting = new MessagePackWriter(measure);
        Write(ref counting, header, sources, optimizer, optimizerBytes, fill: false, target: null);
        counting.Flush();

        var target = new ExactSizeBuffers.FixedBufferWriter(checked((int)measure.Count));
        var writer = new MessagePackWriter(target);
        Write(ref writer, header, sources, optimizer, optimizerBytes, fill: true, target);
        writer.Flush();
        return target.Result();
    }

    /// <summary>
    /// The record's fields in key order, as MessagePack's formatter for <see cref="CheckpointRecord"/>
    /// writes them (an array of 16), with the standard formatters for every field but the bytes.
    /// </summary>
    private static void Write(ref MessagePackWriter w, CheckpointRecord r, List<(string Name, Tensor Tensor)> sources,
        optim.Optimizer optimizer, int optimizerBytes, bool fill, ExactSizeBuffers.FixedBufferWriter? target)
    {
        var options = MessagePackSerializerOptions.Standard;
        w.WriteArrayHeader(16);
        w.Write(r.Schema);
        Field(ref w, r.Kind, options);
        Field(ref w, r.Layer, options);
        w.Write(r.Index);
        w.Write(r.Version);
        Field(ref w, r.SpecJson, options);

        w.WriteArrayHeader(sources.Count); // key 6: the weights
        foreach (var (name, tensor) in sources)
        {
            w.WriteArrayHeader(4);
            Field(ref w, name, options);
            Field(ref w, TensorWire.ToTensorDType(tensor.dtype), options);
            Field(ref w, tensor.shape, options);
            var length = checked((int)(tensor.NumberOfElements * tensor.ElementSize));
            w.WriteBinHeader(length);
            var span = w.GetSpan(length);
            if (fill && length > 0) tensor.bytes.CopyTo(span);
            w.Advance(length);
        }

        w.WriteBinHeader(optimizerBytes); // key 7: TorchSharp's optimizer stream, written into its place
        if (fill && optimizerBytes > 0)
        {
            w.Flush(); // the header is in the array; the stream writes right after it
            var written = target!.WriteStream(optimizerBytes, stream => ModelState.SaveOptimizer(optimizer, stream));
            if (written != optimizerBytes)
                throw new InvalidOperationException($"the optimizer state streamed {written} bytes where it counted {optimizerBytes}; the stream must be deterministic");
            w = new MessagePackWriter(target); // a fresh writer takes up after the stream's bytes
        }
        else
        {
            w.GetSpan(optimizerBytes);
            w.Advance(optimizerBytes);
        }

        Field(ref w, r.Gradients, options);
        Field(ref w, r.SavedInputs, options);
        Field(ref w, r.Incarnation, options);
        Field(ref w, r.ControlsJson, options);
        Field(ref w, r.ExpertIds, options);
        w.Write(r.NextExpertId);
        w.Write(r.ExpertChanges);
        Field(ref w, r.ReplicaCounts, options);
    }

    private static void Field<T>(ref MessagePackWriter w, T value, MessagePackSerializerOptions options) =>
        options.Resolver.GetFormatterWithVerify<T>().Serialize(ref w, value, options);
}
