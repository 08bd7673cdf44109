using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// With a pool of CPU expert workers (<c>MoeSiloOptions.ExpertWorkers</c> = 2), experts compute
/// side by side on their own threads; the layer must still equal the reference layer, with
/// micro-batches in flight at once.
/// </summary>
public class ExpertWorkerPoolTests
{
    [Fact]
    public async Task Overlapping_micro_batches_on_two_expert_workers_equal_the_reference()
    {
        await using var cluster = await MoeTestCluster.StartAsync(1, expertsPerDevice: 8, expertWorkers: 2);
        var spec = new LayerSpec
        {
            DModel = 24, DFF = 48, NumExperts = 8, TopK = 2, Seed = 61,
            Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.1, Momentum = 0.9 },
        };
        var layer = await cluster.Client.CreateLayerAsync("pool", spec);
        using var reference = new ReferenceTrainer("pool", spec);
        using var generator = new Generator(61);
        var xs = Enumerable.Range(0, 3).Select(_ => randn(40, spec.DModel, generator: generator)).ToArray();
        var dys = xs.Select(x => randn(x.shape[0], spec.DModel, generator: generator)).ToArray();

        // Three forwards at once, then their backwards at once: the experts' calls interleave on the pool.
        var forwards = await Task.WhenAll(xs.Select((x, i) => layer.ForwardAsync(x, train: true, batchId: 100 + i)));
        var dxs = await Task.WhenAll(forwards.Select((f, i) => layer.BackwardAsync(f.BatchId, dys[i])));
        for (int i = 0; i < xs.Length; i++)
        {
            using var expectedY = reference.ForwardBackward(100 + i, xs[i], dys[i], auxGrad: 1.0, out var expectedDx);
            using var _ = expectedDx;
            TensorCompare.Close(forwards[i].Y, expectedY, 1e-5, $"y of batch {i}");
            TensorCompare.Close(dxs[i], expectedDx, 1e-5, $"∂x of batch {i}");
        }
        reference.Step();
        Assert.Equal(1, await layer.StepAsync());
        var weights = await layer.GetWeightsAsync();
        TensorCompare.WeightsClose(weights, reference.Weights(), 1e-5);
        foreach (var t in weights.Values.Concat(xs).Concat(dys).Concat(dxs)) t.Dispose();
        foreach (var f in forwards) f.Dispose();
    }
}
