namespace MoeCluster;

/// <summary>An expert's answer: the tensor, and the incarnation of the expert state that computed it.</summary>
[GenerateSerializer, Immutable]
public sealed record ExpertOutput([property: Id(0)] TensorPayload Value, [property: Id(1)] string Incarnation);

/// <summary>
/// An expert lost the state of the current step (its silo died and it came back from its
/// checkpoint). The step cannot go on as it is; the SDK recovers the layer and replays it.
/// </summary>
[GenerateSerializer]
public sealed class ExpertStateLostException : Exception
{
    public ExpertStateLostException(string message) : base(message) { }
}

/// <summary>
/// The layer holds as many training micro-batches awaiting their backward as it may
/// (<see cref="LayerSpec.MaxPendingBatches"/>): run backwards (or discard) before more forwards.
/// Nothing changed in the cluster; the call may be repeated once batches have drained.
/// </summary>
[GenerateSerializer]
public sealed class LayerOverloadedException : Exception
{
    public LayerOverloadedException(string message) : base(message) { }
}
