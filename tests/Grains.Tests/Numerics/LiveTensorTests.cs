using MoeCluster.Grains.Numerics;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Tests.Numerics;

/// <summary>
/// Counts tensors created minus disposed on the test's own thread (TorchSharp's per-thread
/// statistics): other tests running in parallel do not move it, and a leaked tensor that the
/// garbage collector finalizes later still counts as live here.
/// </summary>
public class LiveTensorTests
{
    private static long Live => DisposeScopeManager.Statistics.ThreadTotalLiveCount;

    [Theory]
    [InlineData(ExpertBackwardMode.KeepGraph)]
    [InlineData(ExpertBackwardMode.Recompute)]
    public void Thousand_forward_backward_iterations_keep_the_live_tensor_count_flat(ExpertBackwardMode mode)
    {
        var config = new MoeLayerConfig { DModel = 16, DFF = 32, NumExperts = 8, TopK = 2, CapacityFactor = 1.0, MinCapacity = 1, JitterEpsilon = 0.01 };
        using var layer = new DecomposedMoeLayer(config, seed: 1, mode: mode);
        using var generator = new Generator(2);
        using var x = randn(64, 16, generator: generator);
        using var dy = randn(64, 16, generator: generator);

        void Iterate(int batch)
        {
            using var output = layer.Forward(batch, x, train: true, noiseSeed: batch);
            using var dx = layer.Backward(batch, dy, auxGrad: 1.0);
        }

        for (int i = 0; i < 10; i++) Iterate(i);
        var before = Live;
        for (int i = 10; i < 1010; i++) Iterate(i);
        var after = Live;
        Assert.True(after == before, $"live tensors went from {before} to {after} over 1,000 iterations");
        Assert.Equal(0, layer.PendingCount);
    }

    [Fact]
    public void Reference_layer_iterations_keep_the_live_tensor_count_flat()
    {
        var config = new MoeLayerConfig { DModel = 16, DFF = 32, NumExperts = 8, TopK = 2, CapacityFactor = 1.0, MinCapacity = 1 };
        using var layer = new ReferenceMoeLayer(config, seed: 1);
        using var generator = new Generator(2);
        using var x = randn(64, 16, generator: generator);
        void Iterate()
        {
            using var scope = NewDisposeScope();
            var output = layer.Forward(x, train: true);
            output.Y.sum().add(output.Aux).backward();
        }
        for (int i = 0; i < 10; i++) Iterate();
        var before = Live;
        for (int i = 0; i < 200; i++) Iterate();
        Assert.Equal(before, Live);
    }
}
