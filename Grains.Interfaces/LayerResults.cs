namespace MoeCluster;

/// <summary>Routing counts of one micro-batch: per expert, assignments admitted and dropped.</summary>
[GenerateSerializer, Immutable]
public sealed record RoutingSummary(
    [property: Id(0)] int Tokens,
    [property: Id(1)] int Capacity,
    [property: Id(2)] long[] Routed,
    [property: Id(3)] long[] Dropped)
{
    public long TotalDropped => Dropped.Sum();
}

/// <summary>
/// A layer's forward: y (the input's shape, in the layer's wire dtype), α·L_aux + β·L_z, the two
/// raw losses, and the routing counts.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record LayerForwardResult(
    [property: Id(0)] TensorPayload Y,
    [property: Id(1)] double AuxLoss,
    [property: Id(2)] double LoadBalancingLoss,
    [property: Id(3)] double ZLoss,
    [property: Id(4)] RoutingSummary Routing,
    [property: Id(5)] string Epoch);

/// <summary>A layer's version after a step, and its newest version whose checkpoints are durable.</summary>
[GenerateSerializer, Immutable]
public sealed record StepResult([property: Id(0)] long Version, [property: Id(1)] long DurableVersion);

/// <summary>One named weight tensor of a layer, for comparison, export and import.</summary>
[GenerateSerializer, Immutable]
public sealed record NamedTensor([property: Id(0)] string Name, [property: Id(1)] TensorPayload Value);
