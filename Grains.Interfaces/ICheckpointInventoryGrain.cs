namespace MoeCluster;

/// <summary>The versions of a checkpoint key, as the store holds them (ascending).</summary>
[GenerateSerializer, Immutable]
public sealed record CheckpointVersions([property: Id(0)] string Key, [property: Id(1)] long[] Versions);

/// <summary>What the checkpoint store holds for a layer, for tools (key 0; answers on any silo).</summary>
public interface ICheckpointInventoryGrain : IGrainWithIntegerKey
{
    /// <summary>The router's key and every expert's, with their stored versions; fails when the layer does not exist.</summary>
    Task<CheckpointVersions[]> List(string layer);
}
