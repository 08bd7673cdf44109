using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using MoeCluster.Grains.Checkpoints;
using StackExchange.Redis;

namespace MoeCluster.Hosting.Checkpoints;

/// <summary>
/// Checkpoints in Redis, for clusters without a shared volume. Version <c>v</c> of key <c>k</c> is
/// the chunks <c>{prefix}:k:v:chunk:0..n-1</c> (Redis values should stay small, so a record is cut
/// into chunks of at most the chunk size) and the meta <c>{prefix}:k:v:meta</c>
/// (<see cref="RedisCheckpointMeta"/>), written last: it is the commit marker, and a version without
/// it does not exist. The sorted set <c>{prefix}:k:versions</c> registers every version written,
/// committed or not, so that nothing a write leaves behind goes unfound. Only single-key commands
/// are used, so the keys may live in different slots of a Redis Cluster.
/// <para>
/// A lost connection is not a failed operation: the client reconnects by itself within
/// milliseconds, and every step of a write, read, listing or delete can be done again with the
/// same result, so a step whose command failed with the connection is repeated (for up to
/// <see cref="ReconnectTimeout"/>) instead of failing a checkpoint. StackExchange.Redis 2.13
/// reports a write that races the teardown of its connection as an internal "Failed to write"
/// error (its issue 3167), which is a lost connection too.
/// </para>
/// </summary>
public sealed class RedisCheckpointStore : ICheckpointStore, IDisposable, IAsyncDisposable
{
    public const int DefaultChunkSize = 1 << 20;

    /// <summary>Redis refuses string values above 512 MiB.</summary>
    public const int MaxChunkSize = 512 << 20;

    /// <summary>How many versions of a key survive a write: the newest and the one before, in case the newest is lost.</summary>
    public const int VersionsKept = 2;

    /// <summary>Chunk indices deleted per round trip when the chunk count is not known (no meta).</summary>
    private const int ChunkProbeBatch = 32;

    /// <summary>Reads retried when a writer replaces the version under them.</summary>
    private const int ReadAttempts = 5;

    private readonly IConnectionMultiplexer _redis;
    private readonly bool _ownsConnection;

    /// <param name="redis">A connection the caller keeps and disposes.</param>
    /// <param name="prefix">Put before every key, e.g. <c>moe:{clusterId}:ckpt</c>, so that clusters sharing a Redis do not meet.</param>
    /// <param name="chunkSize">The largest value written, in bytes (1 MiB by default).</param>
    public RedisCheckpointStore(IConnectionMultiplexer redis, string prefix, int chunkSize = DefaultChunkSize)
        : this(redis, prefix, chunkSize, ownsConnection: false)
    {
    }

    private RedisCheckpointStore(IConnectionMultiplexer redis, string prefix, int chunkSize, bool ownsConnection)
    {
        ArgumentNullException.ThrowIfNull(redis);
        ValidateOptions(prefix, chunkSize);
        _redis = redis;
        Prefix = prefix;
        ChunkSize = chunkSize;
        _ownsConnection = ownsConnection;
    }

    /// <summary>Connects to the Redis at <paramref name="hostPort"/>; the store owns that connection and closes it when disposed.</summary>
    public static async Task<RedisCheckpointStore> ConnectAsync(string hostPort, string prefix, int chunkSize = DefaultChunkSize)
    {
        if (string.IsNullOrWhiteSpace(hostPort))
            throw new ArgumentException("checkpoint Redis address is empty; expected host:port");
        ValidateOptions(prefix, chunkSize);
        ConnectionMultiplexer redis;
        try
        {
            redis = await ConnectionMultiplexer.ConnectAsync(hostPort);
        }
        catch (RedisConnectionException e)
        {
            throw new InvalidOperationException($"cannot reach the checkpoint Redis at {hostPort}: {e.Message}", e);
        }
        return new RedisCheckpointStore(redis, prefix, chunkSize, ownsConnection: true);
    }

    public string Prefix { get; }

    public int ChunkSize { get; }

    /// <summary>
    /// How long a step keeps being repeated while the connection to Redis is lost (5 s). A dropped
    /// connection comes back within milliseconds (the kill test needs one repeat, 20 ms later); a
    /// Redis that is down does not, and then the checkpoint must fail well within Orleans' 30 s
    /// call timeout, so that the step reports it (<see cref="CheckpointWriteException"/>) instead of timing out.
    /// </summary>
    public TimeSpan ReconnectTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Where a repeated step is logged (the silo sets it once its services exist).</summary>
    public ILogger Logger { get; set; } = NullLogger.Instance;

    public async Task WriteAsync(string key, long version, ReadOnlyMemory<byte> record, CancellationToken cancellationToken = default)
    {
        CheckpointKeys.Validate(key);
        CheckpointKeys.ValidateVersion(version);
        cancellationToken.ThrowIfCancellationRequested();
        var db = _redis.GetDatabase();
        var chunks = (int)((record.Length + (long)ChunkSize - 1) / ChunkSize);
        var meta = new RedisCheckpointMeta(chunks, record.Length, Convert.ToHexStringLower(SHA256.HashData(record.Span)));

        // Registered before any chunk, so that the chunks of a write that dies half-way are found and pruned later.
        await Repeating("register", key, version, () => db.SortedSetAddAsync(VersionsKey(key), version, version), cancellationToken);
        cancellationToken.ThrowIfCancellationRequested();
        // No cancellation from here on: deleting the meta drops an earlier copy of this version, and the new one must land.
        await Repeating("write", key, version, async () =>
        {
            // The meta goes first so that no reader pairs the old meta with new chunks.
            await db.KeyDeleteAsync(MetaKey(key, version));
            await Task.WhenAll(Enumerable.Range(0, chunks).Select(i =>
            {
                var start = i * ChunkSize;
                return db.StringSetAsync(ChunkKey(key, version, i), record.Slice(start, Math.Min(ChunkSize, record.Length - start)));
            }));
            await DeleteChunksFrom(db, key, version, chunks); // what a longer earlier copy left beyond the new end
            await db.StringSetAsync(MetaKey(key, version), meta.ToString());
            return true;
        }, CancellationToken.None);
        await Repeating("prune", key, version, async () => { await PruneAsync(db, key); return true; }, CancellationToken.None);
    }

    public async Task<byte[]?> ReadAsync(string key, long version, CancellationToken cancellationToken = default)
    {
        CheckpointKeys.Validate(key);
        CheckpointKeys.ValidateVersion(version);
        var db = _redis.GetDatabase();
        for (var attempt = 0; attempt < ReadAttempts; attempt++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var (done, record) = await Repeating("read", key, version, () => TryReadOnce(db, key, version, cancellationToken), cancellationToken);
            if (done) return record;
        }
        throw new InvalidOperationException(
            $"checkpoint {key} version {version} (redis {VersionName(key, version)}) was rewritten during each of {ReadAttempts} reads; expected one writer per key");
    }

    /// <summary>One read: (true, the record or null when the version does not exist), or (false, null) when a writer replaced it meanwhile.</summary>
    private async Task<(bool Done, byte[]? Record)> TryReadOnce(IDatabase db, string key, long version, CancellationToken cancellationToken)
    {
        var metaText = await db.StringGetAsync(MetaKey(key, version)).WaitAsync(cancellationToken);
        if (metaText.IsNull) return (true, null);
        var meta = RedisCheckpointMeta.Parse(metaText.ToString(), out var problem) ?? throw Corrupt(key, version, problem!);
        var leases = await Task.WhenAll(Enumerable.Range(0, meta.Chunks)
            .Select(i => db.StringGetLeaseAsync(ChunkKey(key, version, i)))).WaitAsync(cancellationToken);
        try
        {
            // A writer that replaces or prunes this version deletes its meta first, so a meta that is
            // still the same after the chunks were read means the chunks are what it describes.
            var metaAfter = await db.StringGetAsync(MetaKey(key, version)).WaitAsync(cancellationToken);
            if (metaAfter.IsNull) return (true, null);
            if (metaAfter != metaText) return (false, null);
            return (true, Assemble(key, version, meta, leases));
        }
        finally
        {
            foreach (var lease in leases) lease?.Dispose();
        }
    }

    public async Task<long[]> ListVersionsAsync(string key, CancellationToken cancellationToken = default)
    {
        CheckpointKeys.Validate(key);
        cancellationToken.ThrowIfCancellationRequested();
        var db = _redis.GetDatabase();
        return await Repeating("list", key, null,
            async () => await CommittedVersions(db, key, await RegisteredVersions(db, key).WaitAsync(cancellationToken)).WaitAsync(cancellationToken),
            cancellationToken);
    }

    public async Task DeleteAsync(string key, CancellationToken cancellationToken = default)
    {
        CheckpointKeys.Validate(key);
        var db = _redis.GetDatabase();
        foreach (var version in await Repeating("list", key, null, () => RegisteredVersions(db, key), cancellationToken))
        {
            cancellationToken.ThrowIfCancellationRequested();
            await Repeating("delete", key, version, async () => { await RemoveVersion(db, key, version); return true; }, cancellationToken);
        }
        await Repeating("delete", key, null, () => db.KeyDeleteAsync(VersionsKey(key)), cancellationToken);
    }

    /// <summary>
    /// Runs <paramref name="step"/>, and again after a pause while it fails because the connection
    /// was lost, for up to <see cref="ReconnectTimeout"/>: every step the store takes gives the same
    /// result when done twice. Other failures, and the last connection failure, go to the caller.
    /// </summary>
    private async Task<T> Repeating<T>(string what, string key, long? version, Func<Task<T>> step, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        var pause = TimeSpan.FromMilliseconds(20);
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await step();
            }
            catch (Exception e) when (IsConnectionLoss(e) && Stopwatch.GetElapsedTime(started) + pause < ReconnectTimeout)
            {
                Logger.LogWarning("Checkpoint store: the {What} of {Key}{Version} lost its Redis connection ({Problem}); doing it again in {Pause} ms (attempt {Attempt})",
                    what, key, version is { } v ? $" version {v}" : "", e.Message, (int)pause.TotalMilliseconds, attempt + 1);
                await Task.Delay(pause, cancellationToken);
                pause = TimeSpan.FromMilliseconds(Math.Min(1000, pause.TotalMilliseconds * 2));
            }
        }
    }

    /// <summary>
    /// A command that failed with its connection: a <see cref="RedisConnectionException"/>, or the
    /// socket's own error, which the client hands to a command that was on the wire when the peer
    /// reset the connection (<c>ConnectionResetException</c>, an <see cref="IOException"/>). Never a
    /// refusal by the server, and not a timeout (the server may still run a command that timed out).
    /// </summary>
    private static bool IsConnectionLoss(Exception e) => e switch
    {
        RedisConnectionException or IOException or System.Net.Sockets.SocketException => true,
        AggregateException a => a.InnerExceptions.All(IsConnectionLoss),
        _ => false,
    };

    public void Dispose()
    {
        if (_ownsConnection) _redis.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        if (_ownsConnection) await _redis.DisposeAsync();
    }

    private byte[] Assemble(string key, long version, RedisCheckpointMeta meta, Lease<byte>?[] chunks)
    {
        long total = 0;
        for (var i = 0; i < chunks.Length; i++)
            total += chunks[i]?.Length ?? throw Corrupt(key, version, $"chunk {i} of {chunks.Length} is missing");
        if (total != meta.Length)
            throw Corrupt(key, version, $"length mismatch: the meta says {meta.Length} bytes, the chunks hold {total}");
        var record = new byte[total];
        var offset = 0;
        foreach (var chunk in chunks)
        {
            chunk!.Span.CopyTo(record.AsSpan(offset));
            offset += chunk.Length;
        }
        if (Convert.ToHexStringLower(SHA256.HashData(record)) != meta.Sha256)
            throw Corrupt(key, version, "checksum mismatch");
        return record;
    }

    /// <summary>Keeps the <see cref="VersionsKept"/> newest committed versions and everything newer (writes in progress); removes the rest.</summary>
    private async Task PruneAsync(IDatabase db, string key)
    {
        var registered = await RegisteredVersions(db, key);
        var committed = await CommittedVersions(db, key, registered);
        if (committed.Length <= VersionsKept) return;
        var oldestKept = committed[^VersionsKept];
        foreach (var version in registered.Where(v => v < oldestKept))
            await RemoveVersion(db, key, version);
    }

    /// <summary>Meta first (the version stops existing), then chunks, then the registration, so an interrupted removal is found and finished later.</summary>
    private async Task RemoveVersion(IDatabase db, string key, long version)
    {
        await db.KeyDeleteAsync(MetaKey(key, version));
        await DeleteChunksFrom(db, key, version, 0);
        await db.SortedSetRemoveAsync(VersionsKey(key), version);
    }

    /// <summary>
    /// Deletes chunk <paramref name="from"/> and every one after it. The count is not known without a
    /// meta, but chunks are sent in order over one connection, so what exists is a run: probe batches
    /// until one finds nothing.
    /// </summary>
    private async Task DeleteChunksFrom(IDatabase db, string key, long version, int from)
    {
        for (var start = from; ; start += ChunkProbeBatch)
        {
            var deleted = await Task.WhenAll(Enumerable.Range(start, ChunkProbeBatch).Select(i => db.KeyDeleteAsync(ChunkKey(key, version, i))));
            if (!deleted.Contains(true)) return;
        }
    }

    private async Task<long[]> RegisteredVersions(IDatabase db, string key)
    {
        var members = await db.SortedSetRangeByRankAsync(VersionsKey(key));
        return members
            .Select(m => long.TryParse(m.ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v : -1)
            .Where(v => v >= 0)
            .Order()
            .ToArray();
    }

    /// <summary>Of <paramref name="registered"/>, the versions whose meta exists, ascending.</summary>
    private async Task<long[]> CommittedVersions(IDatabase db, string key, long[] registered)
    {
        var exists = await Task.WhenAll(registered.Select(v => db.KeyExistsAsync(MetaKey(key, v))));
        return registered.Where((_, i) => exists[i]).ToArray();
    }

    private string VersionName(string key, long version) => $"{Prefix}:{key}:{version.ToString(CultureInfo.InvariantCulture)}";

    private RedisKey VersionsKey(string key) => $"{Prefix}:{key}:versions";

    private RedisKey MetaKey(string key, long version) => $"{VersionName(key, version)}:meta";

    private RedisKey ChunkKey(string key, long version, int index) =>
        $"{VersionName(key, version)}:chunk:{index.ToString(CultureInfo.InvariantCulture)}";

    private CheckpointCorruptException Corrupt(string key, long version, string problem) =>
        new($"checkpoint {key} version {version} (redis {VersionName(key, version)}) is corrupt: {problem}");

    private static void ValidateOptions(string prefix, int chunkSize)
    {
        if (string.IsNullOrEmpty(prefix))
            throw new ArgumentException("checkpoint key prefix is empty; expected one such as moe:{clusterId}:ckpt");
        if (chunkSize is < 1 or > MaxChunkSize)
            throw new ArgumentException($"checkpoint chunk size is {chunkSize} bytes; expected 1 to {MaxChunkSize} (512 MiB, Redis's largest value)");
    }
}
