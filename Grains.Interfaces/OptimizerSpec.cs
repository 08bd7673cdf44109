namespace MoeCluster;

public enum OptimizerKind
{
    AdamW = 0,
    Sgd = 1,
}

/// <summary>
/// How a layer's router and experts update their weights at each step. Defaults are PyTorch's
/// AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8) with weight decay 0.01; global-norm clipping
/// across the router and all experts of the layer is off unless <see cref="MaxGradNorm"/> &gt; 0.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record OptimizerSpec
{
    [Id(0)] public OptimizerKind Kind { get; init; } = OptimizerKind.AdamW;
    [Id(1)] public double LearningRate { get; init; } = 1e-3;
    [Id(2)] public double Beta1 { get; init; } = 0.9;
    [Id(3)] public double Beta2 { get; init; } = 0.999;
    [Id(4)] public double Epsilon { get; init; } = 1e-8;
    [Id(5)] public double WeightDecay { get; init; } = 0.01;
    /// <summary>SGD's momentum; AdamW ignores it.</summary>
    [Id(6)] public double Momentum { get; init; } = 0.9;
    /// <summary>Clip the layer's global gradient norm to this before each step; 0 turns clipping off.</summary>
    [Id(7)] public double MaxGradNorm { get; init; }
}
