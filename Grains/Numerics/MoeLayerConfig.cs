using TorchSharp;

namespace MoeCluster.Grains.Numerics;

/// <summary>
/// The shape and routing rules of one MoE layer, as DESIGN.md defines them. Plain data with no
/// Orleans types; the grains map their wire spec onto it.
/// </summary>
public sealed record MoeLayerConfig
{
    public const int MaxExperts = 4096;

    public required int DModel { get; init; }
    public required int DFF { get; init; }
    public required int NumExperts { get; init; }
    public required int TopK { get; init; }
    public ExpertActivation Activation { get; init; } = ExpertActivation.Gelu;

    /// <summary>Capacity factor in training; 0 means dropless.</summary>
    public double CapacityFactor { get; init; } = 1.25;
    /// <summary>Capacity factor in inference (<c>train = false</c>); 0 means dropless.</summary>
    public double EvalCapacityFactor { get; init; } = 2.0;
    public int MinCapacity { get; init; } = 4;

    /// <summary>Renormalise the top-k gates to sum to 1; null means "when k &gt; 1".</summary>
    public bool? Normalize { get; init; }
    /// <summary>Within a rank, admit higher gates first instead of lower token indices first.</summary>
    public bool BatchPrioritized { get; init; }
    /// <summary>Multiplicative router-input noise U(1−ε, 1+ε) in training; 0 turns it off.</summary>
    public double JitterEpsilon { get; init; }
    public double AuxLossWeight { get; init; } = 0.01;
    public double ZLossWeight { get; init; } = 0.001;
    /// <summary>Dropout rate on the experts' hidden activation in training (<see cref="Numerics.ExpertDropout"/>); 0 turns it off.</summary>
    public double ExpertDropout { get; init; }

    /// <summary>Element type the experts compute in: Float32 or BFloat16. The router is always Float32.</summary>
    public torch.ScalarType ComputeDType { get; init; } = torch.ScalarType.Float32;

    public bool NormalizeGates => Normalize ?? TopK > 1;

    /// <summary>
    /// Tokens one expert admits from a micro-batch of <paramref name="tokens"/>, or
    /// <see cref="int.MaxValue"/> when the factor is 0 (dropless).
    /// </summary>
    public int Capacity(int tokens, bool train)
    {
        var cf = train ? CapacityFactor : EvalCapacityFactor;
        if (cf == 0) return int.MaxValue;
        var c = Math.Ceiling(cf * tokens * TopK / NumExperts);
        return (int)Math.Max(MinCapacity, Math.Min(c, int.MaxValue));
    }

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first bad field and what it expects.</summary>
    public MoeLayerConfig Validate()
    {
        if (DModel < 1) throw Bad($"d_model is {DModel}; expected a positive size");
        if (DFF < 1) throw Bad($"d_ff is {DFF}; expected a positive size");
        if (NumExperts < 1 || NumExperts > MaxExperts)
            throw Bad($"E (number of experts) is {NumExperts}; expected 1 ≤ E ≤ {MaxExperts}");
        if (TopK < 1 || TopK > NumExperts)
            throw Bad($"k (top-k) is {TopK}; expected 1 ≤ k ≤ E = {NumExperts}");
        CheckFactor(CapacityFactor, "capacity factor");
        CheckFactor(EvalCapacityFactor, "eval capacity factor");
        if (MinCapacity < 0) throw Bad($"min_capacity is {MinCapacity}; expected ≥ 0");
        if (!double.IsFinite(JitterEpsilon) || JitterEpsilon < 0 || JitterEpsilon >= 1)
            throw Bad($"jitter ε is {JitterEpsilon}; expected 0 ≤ ε < 1");
        if (!double.IsFinite(AuxLossWeight) || AuxLossWeight < 0)
            throw Bad($"aux loss weight α is {AuxLossWeight}; expected a finite number ≥ 0");
        if (!double.IsFinite(ZLossWeight) || ZLossWeight < 0)
            throw Bad($"z-loss weight β is {ZLossWeight}; expected a finite number ≥ 0");
        if (!double.IsFinite(ExpertDropout) || ExpertDropout < 0 || ExpertDropout >= 1)
            throw Bad($"expert dropout is {ExpertDropout}; expected 0 ≤ p < 1 (0 = no dropout)");
        if (ComputeDType is not (torch.ScalarType.Float32 or torch.ScalarType.BFloat16))
            throw Bad($"compute dtype {ComputeDType} is not supported; expected Float32 or BFloat16");
        return this;
    }

    private static void CheckFactor(double cf, string name)
    {
        if (!double.IsFinite(cf) || cf < 0)
            throw Bad($"{name} is {cf}; expected a finite number ≥ 0 (0 = dropless)");
    }

    private static ArgumentException Bad(string message) => new(message);
}
