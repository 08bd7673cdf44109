using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Training;

/// <summary>TorchSharp optimizers from an <see cref="OptimizerSpec"/>, and the gradient arithmetic of global-norm clipping.</summary>
public static class OptimizerFactory
{
    public static optim.Optimizer Create(OptimizerSpec spec, IEnumerable<Parameter> parameters) => spec.Kind switch
    {
        OptimizerKind.AdamW => optim.AdamW(parameters, spec.LearningRate, spec.Beta1, spec.Beta2, spec.Epsilon, spec.WeightDecay),
        OptimizerKind.Sgd => optim.SGD(parameters, spec.LearningRate, spec.Momentum, weight_decay: spec.WeightDecay),
        _ => throw new ArgumentException($"optimizer kind {spec.Kind} is unknown; expected AdamW or Sgd"),
    };

    /// <summary>Σ‖grad‖² over the parameters that have a gradient, in Float64.</summary>
    public static double GradientSquaredNorm(IEnumerable<Parameter> parameters)
    {
        double sum = 0;
        foreach (var p in parameters)
        {
            using var grad = p.grad;
            if (grad is null) continue;
            using var n = grad.to(ScalarType.Float64).square().sum();
            sum += n.item<double>();
        }
        return sum;
    }

    /// <summary>torch's clip_grad_norm_ coefficient: max / (‖g‖ + 1e-6), at most 1; 1 when clipping is off.</summary>
    public static double ClipScale(double maxNorm, double totalSquaredNorm) =>
        maxNorm <= 0 ? 1.0 : Math.Min(1.0, maxNorm / (Math.Sqrt(totalSquaredNorm) + 1e-6));

    /// <summary>Sets the learning rate of every parameter group (the next step uses it).</summary>
    public static void SetLearningRate(optim.Optimizer optimizer, double learningRate)
    {
        foreach (var group in optimizer.ParamGroups) group.LearningRate = learningRate;
    }

    /// <summary>Multiplies every gradient by <paramref name="scale"/>, then steps and zeroes the gradients.</summary>
    public static void Step(optim.Optimizer optimizer, IEnumerable<Parameter> parameters, double scale)
    {
        if (scale != 1.0)
        {
            using var noGrad = no_grad();
            using var factor = scale.ToScalar(); // held: see HeldScalars
            foreach (var p in parameters)
            {
                using var grad = p.grad;
                grad?.mul_(factor);
            }
        }
        optimizer.step();
        optimizer.zero_grad();
    }
}
