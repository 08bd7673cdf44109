using MoeCluster.Grains.Compute;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MoeCluster.Bench;

/// <summary>
/// (a): the reference layer in this process with the cluster's optimizer (AdamW over the gate and
/// every expert), run on a compute queue of its own with libtorch's threads set to the cores, as
/// a silo runs its experts: the floor for the same arithmetic.
/// </summary>
public sealed class ReferenceLayerUnderTest : ILayerUnderTest
{
    private readonly ComputeQueue queue;
    private readonly ReferenceMoeLayer layer;
    private readonly optim.Optimizer optimizer;
    private readonly Parameter[] parameters;

    private ReferenceLayerUnderTest(ComputeQueue queue, ReferenceMoeLayer layer, optim.Optimizer optimizer)
    {
        this.queue = queue;
        this.layer = layer;
        this.optimizer = optimizer;
        parameters = layer.parameters().ToArray();
    }

    public static async Task<ReferenceLayerUnderTest> CreateAsync(LayerSpec spec, ComputeQueue queue)
    {
        var (layer, optimizer) = await queue.RunAsync(() =>
        {
            var l = new ReferenceMoeLayer(LayerSpecMapping.ToConfig(spec), spec.Seed, "bench");
            return (l, OptimizerFactory.Create(spec.Optimizer, l.parameters()));
        });
        return new ReferenceLayerUnderTest(queue, layer, optimizer);
    }

    public Task<long> ForwardAsync(Tensor x) => queue.RunAsync(() =>
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return layer.Forward(x, train: false).Stats.Routed.Sum();
    });

    public Task<long> TrainStepAsync(Tensor x, Tensor dy) => queue.RunAsync(() =>
    {
        long routed;
        using (var scope = NewDisposeScope())
        {
            // ∂L/∂x as well, as the cluster computes it for its caller.
            var input = x.detach().requires_grad_(true);
            var output = layer.Forward(input, train: true);
            output.Y.mul(dy).sum().add(output.Aux).backward();
            routed = output.Stats.Routed.Sum();
        }
        OptimizerFactory.Step(optimizer, parameters, 1.0);
        return routed;
    });

    public async ValueTask DisposeAsync() => await queue.RunAsync(() =>
    {
        optimizer.Dispose();
        layer.Dispose();
    });
}
