namespace MoeCluster.Grains.Checkpoints;

/// <summary>
/// Where routers and experts keep their checkpoints: opaque records, one per (key, version),
/// e.g. key <c>layers/ffn-3/experts/5</c>. A write is durable when its task completes; a store
/// keeps the two newest versions of each key and deletes older ones.
/// </summary>
public interface ICheckpointStore
{
    /// <summary>Stores <paramref name="record"/> as <paramref name="version"/> of <paramref name="key"/>, replacing that version if present.</summary>
    Task WriteAsync(string key, long version, ReadOnlyMemory<byte> record, CancellationToken cancellationToken = default);

    /// <summary>The record of one version, or null when the store has no such version.</summary>
    /// <exception cref="CheckpointCorruptException">the stored bytes fail their checksum</exception>
    Task<byte[]?> ReadAsync(string key, long version, CancellationToken cancellationToken = default);

    /// <summary>The versions stored for <paramref name="key"/>, ascending; empty when none.</summary>
    Task<long[]> ListVersionsAsync(string key, CancellationToken cancellationToken = default);

    /// <summary>Removes every version of <paramref name="key"/>.</summary>
    Task DeleteAsync(string key, CancellationToken cancellationToken = default);
}
