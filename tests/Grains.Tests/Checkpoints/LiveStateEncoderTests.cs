using MoeCluster.Grains.Checkpoints;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Training;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Tests.Checkpoints;

/// <summary>
/// An expert's checkpoint encoded from its live tensors (<see cref="LiveStateEncoder"/>) is the
/// record captured first and then encoded, byte for byte, and reads back to the same state.
/// </summary>
public class LiveStateEncoderTests
{
    private static CheckpointRecord Header(LayerSpec spec) => new()
    {
        Kind = CheckpointRecord.ExpertKind,
        Layer = "ffn",
        Index = 5,
        Version = 12,
        SpecJson = CheckpointCodec.EncodeSpec(spec),
    };

    /// <summary>An expert with AdamW or SGD moments after <paramref name="steps"/> steps of random gradients.</summary>
    private static (ExpertFfn Ffn, optim.Optimizer Optimizer) TrainedExpert(int dModel, int dFF, OptimizerKind kind, int steps)
    {
        var config = new MoeLayerConfig { DModel = dModel, DFF = dFF, NumExperts = 2, TopK = 1 };
        var ffn = ExpertFfn.Create(config, seed: 17);
        var optimizer = OptimizerFactory.Create(new OptimizerSpec { Kind = kind, LearningRate = 1e-2, Momentum = 0.9 }, ffn.parameters());
        using var generator = new Generator(3);
        for (int i = 0; i < steps; i++)
        {
            using var scope = NewDisposeScope();
            foreach (var p in ffn.parameters()) p.grad = randn(p.shape, generator: generator);
            optimizer.step();
        }
        return (ffn, optimizer);
    }

    [Theory]
    [InlineData(4, 8, OptimizerKind.AdamW, 0)]
    [InlineData(4, 8, OptimizerKind.AdamW, 2)]
    [InlineData(16, 40, OptimizerKind.Sgd, 3)]
    [InlineData(512, 2048, OptimizerKind.AdamW, 1)] // the benchmark's expert: 24 MiB, bin32 fields
    public void Live_encoding_is_the_captured_record_encoded_byte_for_byte_and_restores_the_same_state(int dModel, int dFF, OptimizerKind kind, int steps)
    {
        var (ffn, optimizer) = TrainedExpert(dModel, dFF, kind, steps);
        using (ffn)
        using (optimizer)
        {
            var spec = new LayerSpec { DModel = dModel, DFF = dFF, NumExperts = 2 };
            var captured = Header(spec);
            captured.Weights = ModelState.Capture(ffn.named_parameters());
            captured.OptimizerState = ModelState.CaptureOptimizer(optimizer);
            var expected = CheckpointCodec.Encode(captured);

            var live = LiveStateEncoder.Encode(Header(spec), ffn.named_parameters(), optimizer);

            Assert.Equal(expected.Length, live.Length);
            Assert.True(expected.AsSpan().SequenceEqual(live), "the live encoding differs from the captured record's");
            var back = CheckpointCodec.Decode(live, "layers/ffn/experts/5", 12, CheckpointRecord.ExpertKind, "ffn", 5);
            using var twin = ExpertFfn.Create(new MoeLayerConfig { DModel = dModel, DFF = dFF, NumExperts = 2, TopK = 1 }, seed: 99);
            ModelState.Restore(twin.named_parameters(), back.Weights, "twin");
            foreach (var ((name, a), (_, b)) in ffn.named_parameters().Zip(twin.named_parameters()))
                Assert.True(a.eq(b).all().item<bool>(), $"{name} differs after the round trip");
            Assert.Equal(captured.OptimizerState, back.OptimizerState);
        }
    }

    [Fact]
    public void A_header_that_already_holds_weights_is_refused()
    {
        var (ffn, optimizer) = TrainedExpert(4, 8, OptimizerKind.AdamW, 1);
        using (ffn)
        using (optimizer)
        {
            var header = Header(new LayerSpec { DModel = 4, DFF = 8, NumExperts = 2 });
            header.Weights = ModelState.Capture(ffn.named_parameters());
            var e = Assert.Throws<ArgumentException>(() => LiveStateEncoder.Encode(header, ffn.named_parameters(), optimizer));
            Assert.StartsWith("the header's weights and optimizer state must be empty: they are read from the live tensors", e.Message);
        }
    }
}
