namespace MoeCluster;

/// <summary>One live move of an expert between silos: from where to where, the state it carried (weights, optimizer, gradients), and how long it took.</summary>
[GenerateSerializer, Immutable]
public sealed record ExpertMove(
    [property: Id(0)] int Expert,
    [property: Id(1)] string FromSilo,
    [property: Id(2)] string ToSilo,
    [property: Id(3)] long StateBytes,
    [property: Id(4)] double Milliseconds,
    [property: Id(5)] long AtVersion);
