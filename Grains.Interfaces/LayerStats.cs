namespace MoeCluster;

/// <summary>Where an expert lives: the silo that hosts it and the device its weights are on.</summary>
[GenerateSerializer, Immutable]
public sealed record ExpertPlacement([property: Id(0)] string Silo, [property: Id(1)] string Device);

/// <summary>One expert's counters, as the expert itself reports them.</summary>
[GenerateSerializer, Immutable]
public sealed record ExpertStats
{
    [Id(0)] public required int Index { get; init; }
    [Id(1)] public required ExpertPlacement Placement { get; init; }
    /// <summary>Rows the expert computed a forward for.</summary>
    [Id(2)] public long TokensProcessed { get; init; }
    [Id(3)] public long ForwardCalls { get; init; }
    [Id(4)] public long BackwardCalls { get; init; }
    /// <summary>Milliseconds spent in forward, backward and optimizer compute.</summary>
    [Id(5)] public double ComputeMilliseconds { get; init; }
    /// <summary>Training forwards still waiting for their backward.</summary>
    [Id(6)] public int PendingForwards { get; init; }
    /// <summary>Training forwards freed because their backward never came.</summary>
    [Id(7)] public long ExpiredForwards { get; init; }
    /// <summary>Optimizer steps applied.</summary>
    [Id(8)] public long Version { get; init; }
    /// <summary>
    /// Rows computed per step, as a moving average over steps (weight 1/4 to the newest step; the
    /// first step seeds it). Inference forwards between steps count towards the next step.
    /// Starts over when the expert moves or comes back from its checkpoint.
    /// </summary>
    [Id(30)] public double TokensPerStep { get; init; }
    /// <summary>
    /// Milliseconds of forward and backward compute per step (the part that follows the routing;
    /// the optimizer's is the same for every expert), averaged like <see cref="TokensPerStep"/>.
    /// </summary>
    [Id(31)] public double ComputeMillisecondsPerStep { get; init; }
    /// <summary>
    /// TorchSharp tensors alive in the process of the expert's silo when the stats were taken
    /// (<c>torch.Tensor.TotalCount</c>: every tensor of every grain there, weights included, and
    /// undisposed ones until their finalizer runs; <see cref="IMoeExpertGrain.CountSiloLiveTensors"/>
    /// collects first, for leak checks).
    /// </summary>
    [Id(40)] public long SiloLiveTensors { get; init; }
}

/// <summary>An expert as its layer sees it: the router's routing counts beside the expert's own stats.</summary>
[GenerateSerializer, Immutable]
public sealed record ExpertLoad(
    [property: Id(0)] ExpertStats Expert,
    [property: Id(1)] long TokensRouted,
    [property: Id(2)] long TokensDropped);

[GenerateSerializer, Immutable]
public sealed record LayerStats
{
    [Id(0)] public required string Layer { get; init; }
    [Id(1)] public required LayerSpec Spec { get; init; }
    /// <summary>Optimizer steps applied to the layer.</summary>
    [Id(2)] public long Version { get; init; }
    [Id(3)] public required ExpertPlacement Router { get; init; }
    [Id(4)] public required ExpertLoad[] Experts { get; init; }
    [Id(5)] public long MicroBatches { get; init; }
    /// <summary>Training micro-batches whose backward has not come yet.</summary>
    [Id(6)] public int PendingBatches { get; init; }
    /// <summary>Training micro-batches freed because their backward never came.</summary>
    [Id(7)] public long ExpiredBatches { get; init; }
    /// <summary>Live moves of experts between silos, oldest first (the router's memory; the newest 100).</summary>
    [Id(8)] public ExpertMove[] Moves { get; init; } = [];
    /// <summary>Read-only replicas of experts for inference, with the version each holds and the rows it computed.</summary>
    [Id(32)] public ExpertReplica[] Replicas { get; init; } = [];
    /// <summary>TorchSharp tensors alive in the router's silo process (see <see cref="ExpertStats.SiloLiveTensors"/>).</summary>
    [Id(40)] public long RouterSiloLiveTensors { get; init; }
    /// <summary>Answers the router keeps for repeated calls: forwards until their backward, backwards until the step.</summary>
    [Id(41)] public int KeptAnswers { get; init; }

    public long TokensRouted => Experts.Sum(e => e.TokensRouted);
    public long TokensDropped => Experts.Sum(e => e.TokensDropped);
}
