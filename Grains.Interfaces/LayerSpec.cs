namespace MoeCluster;

/// <summary>
/// Everything that defines one MoE layer: its shape, routing rules (DESIGN.md, "The MoE layer"),
/// dtypes, optimizer and seed. The router of the layer keeps it; every expert is built from it.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record LayerSpec
{
    [Id(0)] public required int DModel { get; init; }
    [Id(1)] public required int DFF { get; init; }
    [Id(2)] public required int NumExperts { get; init; }
    [Id(3)] public int TopK { get; init; } = 2;
    [Id(4)] public ExpertActivation Activation { get; init; } = ExpertActivation.Gelu;
    /// <summary>Capacity factor in training; 0 is dropless.</summary>
    [Id(5)] public double CapacityFactor { get; init; } = 1.25;
    /// <summary>Capacity factor in inference; 0 is dropless.</summary>
    [Id(6)] public double EvalCapacityFactor { get; init; } = 2.0;
    [Id(7)] public int MinCapacity { get; init; } = 4;
    /// <summary>Renormalise the top-k gates; null means "when k &gt; 1".</summary>
    [Id(8)] public bool? Normalize { get; init; }
    [Id(9)] public bool BatchPrioritized { get; init; }
    [Id(10)] public double JitterEpsilon { get; init; }
    [Id(11)] public double AuxLossWeight { get; init; } = 0.01;
    [Id(12)] public double ZLossWeight { get; init; } = 0.001;
    /// <summary>What the experts compute in: F32 or BF16. The router computes in F32 always.</summary>
    [Id(13)] public TensorDType ComputeDType { get; init; } = TensorDType.F32;
    /// <summary>What activations and gradients travel as between router and experts: F32 or BF16.</summary>
    [Id(14)] public TensorDType WireDType { get; init; } = TensorDType.F32;
    [Id(15)] public OptimizerSpec Optimizer { get; init; } = new();
    /// <summary>Seeds the gate, every expert (with the layer name and expert index) and the jitter noise.</summary>
    [Id(16)] public long Seed { get; init; }
    /// <summary>Experts keep only their input and redo the forward in backward, trading a third more arithmetic for memory.</summary>
    [Id(17)] public bool RecomputeInBackward { get; init; }
    /// <summary>
    /// How long a training forward waits for its backward before its saved state is freed; also how
    /// long an import that receives no part is kept before its staged parts are freed.
    /// </summary>
    [Id(18)] public TimeSpan SavedForwardTimeout { get; init; } = TimeSpan.FromMinutes(10);
    /// <summary>
    /// Write a checkpoint of the router and every expert every this many steps (1: at every step).
    /// A lost silo costs at most the steps since the newest durable one (the SDK replays them).
    /// </summary>
    [Id(19)] public int CheckpointEvery { get; init; } = 1;
    /// <summary>
    /// Dropout rate inside the experts (on the hidden activation, training only), separate from
    /// the rest of the model; 0 (the default) turns it off. The Switch fine-tuning recipe used 0.4.
    /// Masks derive from (seed, step, batch id, expert), so reruns and replays draw the same ones.
    /// </summary>
    [Id(20)] public double ExpertDropout { get; init; }
    /// <summary>
    /// False (the default): a step captures its state and returns; the checkpoints are written while
    /// the next step's micro-batches run, and the next step waits for them (it fails, not applied,
    /// when they could not be written). True: a step returns only once its checkpoints are durable.
    /// </summary>
    [Id(21)] public bool CheckpointBeforeStepReturns { get; init; }
    /// <summary>
    /// Back-pressure: the most training micro-batches the layer holds between forward and backward
    /// (each keeps its routing, its experts' outputs and the experts' saved forwards). One more
    /// forward is refused with <see cref="LayerOverloadedException"/> instead of growing without bound.
    /// </summary>
    [Id(22)] public int MaxPendingBatches { get; init; } = 256;
}
