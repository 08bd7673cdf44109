using System.Diagnostics;
using MoeCluster.Grains.Checkpoints;

namespace MoeCluster.Grains.Telemetry;

/// <summary>A checkpoint store that counts the bytes and times the reads and writes of the store it wraps.</summary>
public sealed class MeteredCheckpointStore(ICheckpointStore inner) : ICheckpointStore
{
    public ICheckpointStore Inner { get; } = inner;

    public async Task WriteAsync(string key, long version, ReadOnlyMemory<byte> record, CancellationToken cancellationToken = default)
    {
        var started = Stopwatch.GetTimestamp();
        await Inner.WriteAsync(key, version, record, cancellationToken);
        var tags = new TagList { { "kind", MoeMetrics.CheckpointKind(key) } };
        MoeMetrics.CheckpointWriteDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds, tags);
        MoeMetrics.CheckpointWriteBytes.Add(record.Length, tags);
    }

    public async Task<byte[]?> ReadAsync(string key, long version, CancellationToken cancellationToken = default)
    {
        var started = Stopwatch.GetTimestamp();
        var record = await Inner.ReadAsync(key, version, cancellationToken);
        if (record is not null)
        {
            var tags = new TagList { { "kind", MoeMetrics.CheckpointKind(key) } };
            MoeMetrics.CheckpointReadDuration.Record(Stopwatch.GetElapsedTime(started).TotalMilliseconds, tags);
            MoeMetrics.CheckpointReadBytes.Add(record.Length, tags);
        }
        return record;
    }

    public Task<long[]> ListVersionsAsync(string key, CancellationToken cancellationToken = default) =>
        Inner.ListVersionsAsync(key, cancellationToken);

    public Task DeleteAsync(string key, CancellationToken cancellationToken = default) =>
        Inner.DeleteAsync(key, cancellationToken);
}
