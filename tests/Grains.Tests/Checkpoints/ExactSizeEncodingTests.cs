using MessagePack;
using MoeCluster.Grains.Checkpoints;
using MoeCluster.Grains.Training;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Tests.Checkpoints;

/// <summary>
/// Checkpoints encoded into arrays of exactly their length (<see cref="ExactSizeBuffers"/>): the
/// same bytes as MessagePack's own encoder and TorchSharp's own stream, at every size.
/// </summary>
public class ExactSizeEncodingTests
{
    private static CheckpointRecord Record(int weightBytes, int optimizerBytes)
    {
        var random = new Random(weightBytes + optimizerBytes);
        byte[] Bytes(int n) { var b = new byte[n]; random.NextBytes(b); return b; }
        return new CheckpointRecord
        {
            Kind = CheckpointRecord.ExpertKind,
            Layer = "ffn",
            Index = 3,
            Version = 41,
            SpecJson = CheckpointCodec.EncodeSpec(new LayerSpec { DModel = 4, DFF = 8, NumExperts = 2 }),
            Weights = [new TensorRecord { Name = "w1", DType = TensorDType.F32, Shape = [weightBytes / 4], Data = Bytes(weightBytes) },
                       new TensorRecord { Name = "b1", DType = TensorDType.F32, Shape = [1], Data = Bytes(4) }],
            OptimizerState = Bytes(optimizerBytes),
        };
    }

    // Sizes around the 64 KiB scratch buffer and MessagePack's bin8/bin16/bin32 headers, and one of megabytes.
    [Theory]
    [InlineData(0, 0)]
    [InlineData(4, 1)]
    [InlineData(252, 255)]
    [InlineData(256, 65_535)]
    [InlineData(65_536, 65_537)]
    [InlineData(3 << 20, 1 << 20)]
    public void Encode_writes_the_bytes_MessagePack_writes_in_an_array_of_their_length(int weightBytes, int optimizerBytes)
    {
        var record = Record(weightBytes, optimizerBytes);
        var expected = MessagePackSerializer.Serialize(record);
        var encoded = CheckpointCodec.Encode(record);
        Assert.Equal(expected.Length, encoded.Length);
        Assert.True(expected.AsSpan().SequenceEqual(encoded));
        var back = CheckpointCodec.Decode(encoded, "layers/ffn/experts/3", 41, CheckpointRecord.ExpertKind, "ffn", 3);
        Assert.True(record.Weights[0].Data.AsSpan().SequenceEqual(back.Weights[0].Data));
        Assert.True(record.OptimizerState.AsSpan().SequenceEqual(back.OptimizerState));
    }

    [Fact]
    public void Encoding_a_record_again_allocates_about_its_own_length_since_counting_writes_into_a_shared_sink()
    {
        // 4 MiB of weights and 12 MiB of optimizer state: MessagePack asks the counting pass for
        // spans of those lengths. The first encode may grow the shared sink; later ones find it.
        var record = Record(4 << 20, 12 << 20);
        var first = CheckpointCodec.Encode(record);
        Assert.True(ExactSizeBuffers.CountingSink.Length >= 12 << 20, $"shared sink is {ExactSizeBuffers.CountingSink.Length} bytes");

        var before = GC.GetAllocatedBytesForCurrentThread();
        var again = CheckpointCodec.Encode(record);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.True(first.AsSpan().SequenceEqual(again));
        // The result's own array plus bookkeeping; a scratch buffer per count would add 12 MiB.
        Assert.True(allocated < again.Length + (1 << 20), $"encoding {again.Length} bytes allocated {allocated}");
    }

    [Fact]
    public void A_count_larger_than_the_shared_sink_may_grow_gets_a_buffer_of_its_own()
    {
        var size = ExactSizeBuffers.CountingSink.SharedSinkMaxBytes + 1;
        var memory = ExactSizeBuffers.CountingSink.Get(size);
        Assert.True(memory.Length >= size);
        Assert.True(ExactSizeBuffers.CountingSink.Length <= ExactSizeBuffers.CountingSink.SharedSinkMaxBytes);
    }

    [Fact]
    public void An_optimizer_state_captured_exactly_is_the_stream_TorchSharp_writes_and_restores()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(5);
        var parameters = new[] { new Parameter(randn(64, 32, generator: generator)), new Parameter(randn(32, generator: generator)) };
        var optimizer = OptimizerFactory.Create(new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 1e-2 }, parameters);
        foreach (var p in parameters) p.grad = randn(p.shape, generator: generator);
        optimizer.step();

        var captured = ModelState.CaptureOptimizer(optimizer);
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
            ((OptimizerHelper)optimizer).save_state_dict(writer);
        Assert.Equal(stream.ToArray(), captured);

        var twin = OptimizerFactory.Create(new OptimizerSpec { Kind = OptimizerKind.AdamW, LearningRate = 1e-2 }, parameters);
        ModelState.RestoreOptimizer(twin, captured, "test");
        Assert.Equal(captured, ModelState.CaptureOptimizer(twin));
    }

    [Fact]
    public void An_encoding_that_writes_more_the_second_time_is_refused_by_name()
    {
        var calls = 0;
        var error = Assert.Throws<InvalidOperationException>(() => ExactSizeBuffers.WriteStream(s => s.Write(new byte[++calls * 10])));
        Assert.Equal("the second pass wrote past the 10 bytes the first counted; the encoding must be deterministic", error.Message);
    }
}
