namespace MoeCluster;

/// <summary>
/// What a layer's next steps train, and how fast: freeze the router, every expert or chosen
/// experts (their weights stay bit-identical: no update, no weight decay, no optimizer state
/// advanced), give each expert a learning-rate multiplier, and set the router's rate on its own.
/// Set at a step boundary (<c>RemoteMoeLayer.SetTrainingControlsAsync</c>); the router keeps it
/// in its checkpoints and hands each expert its part with every step.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record TrainingControls
{
    [Id(0)] public bool FreezeRouter { get; init; }
    /// <summary>Freeze every expert, whatever <see cref="FrozenExperts"/> says.</summary>
    [Id(1)] public bool FreezeExperts { get; init; }
    /// <summary>Indices of the experts to freeze.</summary>
    [Id(2)] public int[] FrozenExperts { get; init; } = [];
    /// <summary>The router's learning rate; null: the optimizer spec's.</summary>
    [Id(3)] public double? RouterLearningRate { get; init; }
    /// <summary>Per expert index, a factor on the optimizer spec's learning rate (1 for an expert not listed).</summary>
    [Id(4)] public IReadOnlyDictionary<int, double> ExpertLearningRateMultipliers { get; init; } = new Dictionary<int, double>();

    public bool IsExpertFrozen(int expert) => FreezeExperts || FrozenExperts.Contains(expert);

    public double ExpertMultiplier(int expert) => ExpertLearningRateMultipliers.TryGetValue(expert, out var m) ? m : 1.0;
}

/// <summary>An expert's part of the <see cref="TrainingControls"/> for one step.</summary>
[GenerateSerializer, Immutable]
public sealed record ExpertStepControl([property: Id(0)] bool Frozen, [property: Id(1)] double LearningRate);
