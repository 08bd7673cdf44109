using MoeCluster.Client;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

[Collection(SharedClusterCollection.Name)]
public class RemoteModuleTests(SharedClusterFixture fixture)
{
    [Fact]
    public async Task Loss_backward_flows_through_the_cluster_and_the_aux_loss_counts()
    {
        var spec = new LayerSpec { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, CapacityFactor = 0, Seed = 3, Optimizer = new OptimizerSpec { Kind = OptimizerKind.Sgd, LearningRate = 0.05 } };
        const string name = "module";
        var layer = await fixture.Client.CreateLayerAsync(name, spec);
        using var module = new RemoteMoeModule(layer);
        using var reference = new ReferenceTrainer(name, spec);
        using var generator = new Generator(4);
        using var input = randn(10, 8, generator: generator);
        using var target = randn(10, 8, generator: generator);

        // A local linear layer in front, so ∂x must come back from the cluster to train it.
        using var scale = input.detach().clone().requires_grad_(true);
        using var h = scale.mul(2);
        using var y = module.forward(h);
        Assert.NotNull(module.AuxLoss);
        using var loss = y.sub(target).square().sum().add(module.AuxLoss!.mul(3));
        loss.backward();
        using var gotGrad = scale.grad!;

        // Same loss in the reference: ∂L/∂y = 2 (y − target), ∂L/∂aux = 3.
        using var h2 = input.mul(2);
        using var refY = reference.ForwardBackward(0, h2, y.detach().sub(target).mul(2), auxGrad: 3, out var refDx);
        using var _ = refDx;
        TensorCompare.Close(y, refY, 1e-5, "y");
        using var expectedGrad = refDx.mul(2);
        TensorCompare.Close(gotGrad, expectedGrad, 1e-5, "∂input");

        reference.Step();
        await layer.StepAsync();
        TensorCompare.WeightsClose(await layer.GetWeightsAsync(), reference.Weights(), 1e-5);
    }

    [Fact]
    public async Task Experts_train_even_when_the_input_needs_no_gradient_and_eval_keeps_nothing()
    {
        var layer = await fixture.Client.CreateLayerAsync("module-first", new LayerSpec { DModel = 4, DFF = 8, NumExperts = 2, TopK = 1, CapacityFactor = 0, Seed = 5 });
        using var module = new RemoteMoeModule(layer);
        using var x = ones(6, 4);
        using (var y = module.forward(x))
        using (var loss = y.sum())
            loss.backward();
        var stats = await layer.GetStatsAsync();
        Assert.Equal(0, stats.PendingBatches);
        Assert.Equal(6, stats.Experts.Sum(e => e.Expert.BackwardCalls > 0 ? e.TokensRouted : 0));

        module.eval();
        using (var y = module.forward(x)) Assert.Equal(new long[] { 6, 4 }, y.shape);
        Assert.Null(module.AuxLoss);
        Assert.Equal(0, (await layer.GetStatsAsync()).PendingBatches);
    }

    [Fact]
    public async Task A_backward_that_fails_in_the_cluster_is_thrown_by_the_next_step_not_lost()
    {
        var layer = await fixture.Client.CreateLayerAsync("module-expired",
            new LayerSpec { DModel = 4, DFF = 8, NumExperts = 2, TopK = 1, CapacityFactor = 0, SavedForwardTimeout = TimeSpan.FromMilliseconds(200) });
        using var module = new RemoteMoeModule(layer);
        using var x = ones(3, 4);
        using var y = module.forward(x);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while ((await layer.GetStatsAsync()).PendingBatches > 0 && DateTime.UtcNow < deadline) await Task.Delay(50);

        using (var loss = y.sum()) loss.backward(); // the cluster has freed the batch: this backward fails inside autograd
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => layer.StepAsync());
        Assert.StartsWith("the backward of batch ", error.Message);
        Assert.Contains("through layer \"module-expired\" failed, so its gradients are incomplete: no training forward is pending", error.Message);
        Assert.Equal(0, await layer.GetVersionAsync());
        Assert.Equal(1, await layer.StepAsync()); // reported once; the caller decides what to do next
    }
}
