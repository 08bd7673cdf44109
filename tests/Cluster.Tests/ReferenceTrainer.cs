using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// The reference layer trained the way the cluster trains a layer: same spec, same seeds, same
/// jitter noise per batch id, same optimizer and global-norm clipping.
/// </summary>
public sealed class ReferenceTrainer : IDisposable
{
    private readonly optim.Optimizer optimizer;

    public ReferenceTrainer(string layerName, LayerSpec spec)
    {
        Name = layerName;
        Spec = spec;
        Layer = new ReferenceMoeLayer(LayerSpecMapping.ToConfig(spec), spec.Seed, layerName);
        optimizer = OptimizerFactory.Create(spec.Optimizer, Layer.parameters());
    }

    public string Name { get; }
    public LayerSpec Spec { get; }
    public ReferenceMoeLayer Layer { get; }

    /// <summary>Forward and backward of one micro-batch; returns y (caller disposes) and fills <paramref name="dx"/>.</summary>
    public Tensor ForwardBackward(long batchId, Tensor x, Tensor dy, double auxGrad, out Tensor dx)
    {
        using var input = x.detach().requires_grad_(true);
        using var output = Layer.Forward(input, train: true, noiseSeed: LayerSeeds.Jitter(Spec.Seed, Name, batchId));
        using (var loss = output.Y.mul(dy).sum().add(output.Aux.mul(auxGrad))) loss.backward();
        using var grad = input.grad!;
        dx = grad.clone();
        return output.Y.detach().clone();
    }

    public void Step()
    {
        var parameters = Layer.parameters().ToArray();
        var scale = OptimizerFactory.ClipScale(Spec.Optimizer.MaxGradNorm, OptimizerFactory.GradientSquaredNorm(parameters));
        OptimizerFactory.Step(optimizer, parameters, scale);
    }

    public Dictionary<string, Tensor> Weights() =>
        Layer.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);

    public void Dispose()
    {
        optimizer.Dispose();
        Layer.Dispose();
    }
}
