using System.Collections.Concurrent;

namespace MoeCluster.Grains.Experts;

/// <summary>The expert activations of this silo, so that a silo shutting down can hand each of them off.</summary>
public sealed class LocalExperts
{
    private readonly ConcurrentDictionary<(long Index, string Layer), byte> active = new();

    public void Add(long index, string layer) => active[(index, layer)] = 0;

    public void Remove(long index, string layer) => active.TryRemove((index, layer), out _);

    public IReadOnlyList<(long Index, string Layer)> All => active.Keys.ToList();
}
