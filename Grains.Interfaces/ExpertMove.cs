namespace MoeCluster;

/// <summary>
/// One live move of an expert between silos: from where to where, the state it carried (weights,
/// optimizer, gradients), how long it took, and why: <c>"asked"</c> (a move the SDK, CLI or
/// rebalancer asked for) or <c>"spread"</c> (the router evening out slot use after a silo joined).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ExpertMove(
    [property: Id(0)] int Expert,
    [property: Id(1)] string FromSilo,
    [property: Id(2)] string ToSilo,
    [property: Id(3)] long StateBytes,
    [property: Id(4)] double Milliseconds,
    [property: Id(5)] long AtVersion,
    [property: Id(30)] string Reason = ExpertMove.Asked)
{
    public const string Asked = "asked", Spread = "spread";
}
