using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// The reference layer trained the way the cluster trains a layer: same spec, same seeds, same
/// jitter noise and dropout masks per (step, batch id), same optimizer, global-norm clipping and
/// <see cref="TrainingControls"/>. One optimizer per part (gate, each expert), as the grains
/// have, so that a part's learning rate and freezing apply to it alone.
/// </summary>
public sealed class ReferenceTrainer : IDisposable
{
    private readonly (Parameter[] Parameters, optim.Optimizer Optimizer)[] parts;

    public ReferenceTrainer(string layerName, LayerSpec spec)
    {
        Name = layerName;
        Spec = spec;
        Layer = new ReferenceMoeLayer(LayerSpecMapping.ToConfig(spec), spec.Seed, layerName);
        parts = new[] { new[] { Layer.GateWeight } }
            .Concat(Layer.Experts.Select(e => e.parameters().ToArray()))
            .Select(ps => (ps, OptimizerFactory.Create(spec.Optimizer, ps))).ToArray();
    }

    public string Name { get; }
    public LayerSpec Spec { get; }
    public ReferenceMoeLayer Layer { get; }
    public TrainingControls Controls { get; set; } = new();
    /// <summary>Steps applied so far; forwards belong to the next one.</summary>
    public long Version { get; private set; }

    /// <summary>Forward and backward of one micro-batch; returns y (caller disposes) and fills <paramref name="dx"/>.</summary>
    public Tensor ForwardBackward(long batchId, Tensor x, Tensor dy, double auxGrad, out Tensor dx)
    {
        using var input = x.detach().requires_grad_(true);
        using var output = Layer.Forward(input, train: true, noiseSeed: LayerSeeds.Jitter(Spec.Seed, Name, batchId), step: Version + 1, batchId: batchId);
        using (var loss = output.Y.mul(dy).sum().add(output.Aux.mul(auxGrad))) loss.backward();
        using var grad = input.grad!;
        dx = grad.clone();
        return output.Y.detach().clone();
    }

    public void Step()
    {
        bool Frozen(int part) => part == 0 ? Controls.FreezeRouter : Controls.IsExpertFrozen(part - 1);
        var training = Enumerable.Range(0, parts.Length).Where(p => !Frozen(p)).ToArray();
        var scale = OptimizerFactory.ClipScale(Spec.Optimizer.MaxGradNorm,
            OptimizerFactory.GradientSquaredNorm(training.SelectMany(p => parts[p].Parameters)));
        for (int p = 0; p < parts.Length; p++)
        {
            var (parameters, optimizer) = parts[p];
            if (Frozen(p))
            {
                optimizer.zero_grad();
                continue;
            }
            OptimizerFactory.SetLearningRate(optimizer, p == 0
                ? Controls.RouterLearningRate ?? Spec.Optimizer.LearningRate
                : Spec.Optimizer.LearningRate * Controls.ExpertMultiplier(p - 1));
            OptimizerFactory.Step(optimizer, parameters, scale);
        }
        Version++;
    }

    public Dictionary<string, Tensor> Weights() =>
        Layer.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);

    public void Dispose()
    {
        foreach (var (_, optimizer) in parts) optimizer.Dispose();
        Layer.Dispose();
    }
}
