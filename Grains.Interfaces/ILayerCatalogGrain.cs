namespace MoeCluster;

/// <summary>
/// The names of the cluster's layers (key 0), for tools that list them. Routers add their layer
/// once it is created and remove it when it is deleted; the list is kept in the checkpoint store,
/// so it survives the loss of any silo and a restart of the whole cluster.
/// </summary>
public interface ILayerCatalogGrain : IGrainWithIntegerKey
{
    /// <summary>Records that <paramref name="layer"/> exists; repeating it changes nothing.</summary>
    Task Add(string layer);

    /// <summary>Forgets <paramref name="layer"/>; a name it does not know is ignored.</summary>
    Task Remove(string layer);

    /// <summary>The layers' names, in ordinal order.</summary>
    Task<string[]> List();
}
