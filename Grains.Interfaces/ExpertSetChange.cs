namespace MoeCluster;

/// <summary>
/// The outcome of adding or removing experts: the layer's experts by id, in gate-column order,
/// after the change. Each change has a number (1, 2, … over the layer's life, kept in the router's
/// checkpoints), so that a change sent again after a recovery is recognised and not applied twice.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ExpertSetChange(
    [property: Id(0)] long ChangeNumber,
    [property: Id(1)] long Version,
    [property: Id(2)] int[] ExpertIds,
    [property: Id(3)] int[] Added,
    [property: Id(4)] int[] Removed,
    [property: Id(5)] LayerSpec Spec);
