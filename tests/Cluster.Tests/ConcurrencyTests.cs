using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

[Collection(SharedClusterCollection.Name)]
public class ConcurrencyTests(SharedClusterFixture fixture)
{
    [Fact]
    public async Task Eight_micro_batches_in_flight_from_four_tasks_equal_the_sequential_run()
    {
        var spec = new LayerSpec { DModel = 12, DFF = 24, NumExperts = 8, TopK = 2, CapacityFactor = 1.0, MinCapacity = 1, Seed = 8 };
        const string name = "concurrent";
        var layer = await fixture.Client.CreateLayerAsync(name, spec);
        using var reference = new ReferenceTrainer(name, spec);
        using var generator = new Generator(9);
        var xs = Enumerable.Range(0, 8).Select(_ => randn(40, spec.DModel, generator: generator)).ToArray();
        var dys = Enumerable.Range(0, 8).Select(_ => randn(40, spec.DModel, generator: generator)).ToArray();

        // The sequential run, in the reference.
        var expected = new (Tensor Y, Tensor Dx)[8];
        for (int b = 0; b < 8; b++)
        {
            var y = reference.ForwardBackward(b, xs[b], dys[b], 1.0, out var dx);
            expected[b] = (y, dx);
        }
        reference.Step();

        // Four tasks, two micro-batches each, all forwards in flight before any backward.
        var allForwarded = new TaskCompletionSource();
        var forwarded = 0;
        var results = new (Tensor Y, Tensor Dx)[8];
        await Task.WhenAll(Enumerable.Range(0, 4).Select(task => Task.Run(async () =>
        {
            var mine = new[] { task * 2, task * 2 + 1 };
            var forwards = await Task.WhenAll(mine.Select(b => layer.ForwardAsync(xs[b], batchId: b)));
            if (Interlocked.Add(ref forwarded, 2) == 8) allForwarded.SetResult();
            await allForwarded.Task;
            for (int j = 0; j < 2; j++)
                results[mine[j]] = (forwards[j].Y, await layer.BackwardAsync(mine[j], dys[mine[j]]));
        })));
        Assert.Equal(1, await layer.StepAsync());

        for (int b = 0; b < 8; b++)
        {
            TensorCompare.Close(results[b].Y, expected[b].Y, 1e-5, $"y of batch {b}");
            TensorCompare.Close(results[b].Dx, expected[b].Dx, 1e-5, $"∂x of batch {b}");
        }
        var weights = await layer.GetWeightsAsync();
        TensorCompare.WeightsClose(weights, reference.Weights(), 1e-5);
        var stats = await layer.GetStatsAsync();
        Assert.Equal(8, stats.MicroBatches);
        Assert.Equal(0, stats.PendingBatches);
    }
}
