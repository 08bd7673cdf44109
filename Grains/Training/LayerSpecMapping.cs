using MoeCluster.Grains.Numerics;
using TorchSharp;

namespace MoeCluster.Grains.Training;

/// <summary>Checks a wire <see cref="LayerSpec"/> and maps it onto the numerics' <see cref="MoeLayerConfig"/>.</summary>
public static class LayerSpecMapping
{
    /// <summary>Throws an <see cref="ArgumentException"/> naming the first bad field and what it expects.</summary>
    public static MoeLayerConfig ToConfig(LayerSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.ComputeDType is not (TensorDType.F32 or TensorDType.BF16))
            throw new ArgumentException($"compute dtype {spec.ComputeDType} is not supported; expected F32 or BF16");
        if (!Enum.IsDefined(spec.WireDType))
            throw new ArgumentException($"wire dtype {(int)spec.WireDType} is not supported; expected F32, BF16 or F16");
        if (spec.SavedForwardTimeout <= TimeSpan.Zero)
            throw new ArgumentException($"saved-forward timeout is {spec.SavedForwardTimeout}; expected a positive time");
        if (spec.MaxPendingBatches < 1)
            throw new ArgumentException($"pending micro-batch limit is {spec.MaxPendingBatches}; expected ≥ 1");
        if (spec.CheckpointEvery < 1)
            throw new ArgumentException($"checkpoint interval is {spec.CheckpointEvery}; expected ≥ 1 (steps between checkpoints)");
        ValidateOptimizer(spec.Optimizer ?? throw new ArgumentException("optimizer is null; expected an OptimizerSpec"));
        return new MoeLayerConfig
        {
            DModel = spec.DModel,
            DFF = spec.DFF,
            NumExperts = spec.NumExperts,
            TopK = spec.TopK,
            Activation = spec.Activation,
            CapacityFactor = spec.CapacityFactor,
            EvalCapacityFactor = spec.EvalCapacityFactor,
            MinCapacity = spec.MinCapacity,
            Normalize = spec.Normalize,
            BatchPrioritized = spec.BatchPrioritized,
            JitterEpsilon = spec.JitterEpsilon,
            AuxLossWeight = spec.AuxLossWeight,
            ZLossWeight = spec.ZLossWeight,
            ExpertDropout = spec.ExpertDropout,
            ComputeDType = TensorWire.ToScalarType(spec.ComputeDType),
        }.Validate();
    }

    public static ExpertBackwardMode BackwardMode(LayerSpec spec) =>
        spec.RecomputeInBackward ? ExpertBackwardMode.Recompute : ExpertBackwardMode.KeepGraph;

    private static void ValidateOptimizer(OptimizerSpec o)
    {
        if (!Enum.IsDefined(o.Kind)) throw new ArgumentException($"optimizer kind {(int)o.Kind} is unknown; expected AdamW or Sgd");
        if (!double.IsFinite(o.LearningRate) || o.LearningRate <= 0)
            throw new ArgumentException($"learning rate is {o.LearningRate}; expected a finite number > 0");
        if (!(o.Beta1 >= 0 && o.Beta1 < 1)) throw new ArgumentException($"beta1 is {o.Beta1}; expected 0 ≤ beta1 < 1");
        if (!(o.Beta2 >= 0 && o.Beta2 < 1)) throw new ArgumentException($"beta2 is {o.Beta2}; expected 0 ≤ beta2 < 1");
        if (!double.IsFinite(o.Epsilon) || o.Epsilon <= 0) throw new ArgumentException($"epsilon is {o.Epsilon}; expected a finite number > 0");
        if (!double.IsFinite(o.WeightDecay) || o.WeightDecay < 0) throw new ArgumentException($"weight decay is {o.WeightDecay}; expected a finite number ≥ 0");
        if (!double.IsFinite(o.Momentum) || o.Momentum < 0) throw new ArgumentException($"momentum is {o.Momentum}; expected a finite number ≥ 0");
        if (!double.IsFinite(o.MaxGradNorm) || o.MaxGradNorm < 0)
            throw new ArgumentException($"max gradient norm is {o.MaxGradNorm}; expected a finite number ≥ 0 (0 = no clipping)");
    }
}
