namespace MoeCluster.Client;

/// <summary>
/// An expert-set change as the SDK logs it for replay: add <see cref="Count"/> experts
/// (<see cref="Init"/>), or remove <see cref="Remove"/>, as the layer's change number
/// <see cref="Number"/>. Sent again after a recovery, a change the layer already holds is ignored.
/// </summary>
internal sealed record ExpertSetRequest(long Number, int Count, ExpertInit? Init, int[]? Remove)
{
    public Task<ExpertSetChange> SendTo(IMoeRouterGrain router) =>
        Remove is { } ids ? router.RemoveExperts(ids, Number) : router.AddExperts(Count, Init!, Number);
}
