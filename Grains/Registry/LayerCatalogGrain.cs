using System.Text.Json;
using MoeCluster.Grains.Checkpoints;

namespace MoeCluster.Grains.Registry;

/// <summary>
/// The list of layer names, written to the checkpoint store (key <see cref="Key"/>, one version
/// per change, as JSON) before a change returns, and read back when the grain activates, so that
/// it needs no grain storage provider and lives wherever the layers' checkpoints live.
/// </summary>
public sealed class LayerCatalogGrain(ICheckpointStore store) : Grain, ILayerCatalogGrain
{
    public const string Key = "catalog/layers";

    private readonly SortedSet<string> layers = new(StringComparer.Ordinal);
    private long version;

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        var versions = await store.ListVersionsAsync(Key, cancellationToken);
        for (int i = versions.Length - 1; i >= 0; i--)
        {
            try
            {
                var bytes = await store.ReadAsync(Key, versions[i], cancellationToken);
                if (bytes is null) continue;
                layers.UnionWith(JsonSerializer.Deserialize<string[]>(bytes)
                    ?? throw new CheckpointCorruptException($"checkpoint {Key} version {versions[i]} holds null; expected a list of layer names"));
                version = versions[i];
                return;
            }
            catch (CheckpointCorruptException) when (i > 0)
            {
                // The store keeps the version before; a list one change old is better than none.
            }
        }
    }

    public async Task Add(string layer)
    {
        if (layers.Add(layer)) await Save(() => layers.Remove(layer));
    }

    public async Task Remove(string layer)
    {
        if (layers.Remove(layer)) await Save(() => layers.Add(layer));
    }

    public Task<string[]> List() => Task.FromResult(layers.ToArray());

    /// <summary>Writes the list as the next version; undoes the change when the write fails, so memory never runs ahead of the store.</summary>
    private async Task Save(Action undo)
    {
        try
        {
            await store.WriteAsync(Key, version + 1, JsonSerializer.SerializeToUtf8Bytes(layers.ToArray()));
            version++;
        }
        catch
        {
            undo();
            throw;
        }
    }
}
