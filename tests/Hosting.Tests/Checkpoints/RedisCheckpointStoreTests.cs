using MoeCluster.Client.Tests;
using MoeCluster.Grains.Checkpoints;
using MoeCluster.Hosting.Checkpoints;
using StackExchange.Redis;
using Xunit;

namespace MoeCluster.Hosting.Tests.Checkpoints;

/// <summary>
/// The contract on the suite's Redis (MOE_TEST_REDIS) under a fresh prefix per test, with a small
/// chunk size so that large records span many chunks; and what only Redis can go through: damaged
/// or missing chunks, and writes that never reached their meta.
/// </summary>
public sealed class RedisCheckpointStoreTests(Xunit.Abstractions.ITestOutputHelper output) : CheckpointStoreContract
{
    private const int ChunkSize = 64 * 1024;
    private readonly string _prefix = $"moe-test:{Guid.NewGuid():N}:ckpt";
    private ConnectionMultiplexer _redis = null!;

    private IDatabase Db => _redis.GetDatabase();

    protected override async Task<ICheckpointStore> CreateStoreAsync()
    {
        _redis = await ConnectionMultiplexer.ConnectAsync(TestRedis.Address);
        return new RedisCheckpointStore(_redis, _prefix, ChunkSize);
    }

    protected override async Task DestroyStoreAsync()
    {
        if (_redis is null) return;
        await DeleteKeysAsync(await KeysAsync($"{_prefix}:*"));
        await _redis.DisposeAsync();
    }

    private async Task<RedisKey[]> KeysAsync(string pattern)
    {
        var keys = new List<RedisKey>();
        await foreach (var key in _redis.GetServers()[0].KeysAsync(pattern: pattern)) keys.Add(key);
        return keys.ToArray();
    }

    private async Task DeleteKeysAsync(RedisKey[] keys)
    {
        foreach (var key in keys) await Db.KeyDeleteAsync(key);
    }

    private string Version(string key, long version) => $"{_prefix}:{key}:{version}";

    private static int ChunksOf(int length) => (length + ChunkSize - 1) / ChunkSize;

    [Fact]
    public async Task A_record_is_stored_as_chunks_then_a_meta_then_a_registration()
    {
        var record = Bytes(LargeRecord, 1);
        await Store.WriteAsync(Key, 3, record);
        var chunks = ChunksOf(LargeRecord);
        Assert.Equal(81, chunks);
        for (var i = 0; i < chunks; i++)
            Assert.Equal(i < chunks - 1 ? ChunkSize : LargeRecord % ChunkSize, (int)await Db.StringLengthAsync($"{Version(Key, 3)}:chunk:{i}"));
        Assert.False(await Db.KeyExistsAsync($"{Version(Key, 3)}:chunk:{chunks}"));
        Assert.Equal($"format=1 chunks=81 length={LargeRecord} sha256={Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(record))}",
            (string?)await Db.StringGetAsync($"{Version(Key, 3)}:meta"));
        Assert.Equal(["3"], (await Db.SortedSetRangeByRankAsync($"{_prefix}:{Key}:versions")).Select(v => v.ToString()));
    }

    [Fact]
    public async Task An_empty_record_has_a_meta_and_no_chunk()
    {
        await Store.WriteAsync(Key, 1, Array.Empty<byte>());
        Assert.Equal([$"{Version(Key, 1)}:meta", $"{_prefix}:{Key}:versions"], (await KeysAsync($"{_prefix}:*")).Select(k => k.ToString()).Order(StringComparer.Ordinal));
        Assert.Equal(Array.Empty<byte>(), await Store.ReadAsync(Key, 1));
    }

    [Fact]
    public async Task Pruned_and_shrunk_versions_leave_no_redis_key_behind()
    {
        await Store.WriteAsync(Key, 1, Bytes(LargeRecord, 1));
        await Store.WriteAsync(Key, 2, Bytes(LargeRecord, 2));
        await Store.WriteAsync(Key, 3, Bytes(3 * ChunkSize, 3));
        await Store.WriteAsync(Key, 3, Bytes(ChunkSize + 1, 4)); // from 3 chunks down to 2
        Assert.Empty(await KeysAsync($"{Version(Key, 1)}:*"));
        Assert.Equal(ChunksOf(LargeRecord) + 1, (await KeysAsync($"{Version(Key, 2)}:*")).Length);
        Assert.Equal([$"{Version(Key, 3)}:chunk:0", $"{Version(Key, 3)}:chunk:1", $"{Version(Key, 3)}:meta"],
            (await KeysAsync($"{Version(Key, 3)}:*")).Select(k => k.ToString()).Order(StringComparer.Ordinal));
        Assert.Equal(["2", "3"], (await Db.SortedSetRangeByRankAsync($"{_prefix}:{Key}:versions")).Select(v => v.ToString()));
    }

    [Fact]
    public async Task A_chunk_with_other_bytes_is_reported_as_a_checksum_mismatch()
    {
        await Store.WriteAsync("layers/a/experts/1", 3, Bytes(LargeRecord, 1));
        var chunk = $"{Version("layers/a/experts/1", 3)}:chunk:40";
        var bytes = (byte[])(await Db.StringGetAsync(chunk))!;
        bytes[100] ^= 0xFF;
        await Db.StringSetAsync(chunk, bytes);

        var error = await Assert.ThrowsAsync<CheckpointCorruptException>(() => Store.ReadAsync("layers/a/experts/1", 3));
        Assert.Equal($"checkpoint layers/a/experts/1 version 3 (redis {_prefix}:layers/a/experts/1:3) is corrupt: checksum mismatch", error.Message);
    }

    [Fact]
    public async Task A_missing_chunk_is_reported_by_its_index()
    {
        await Store.WriteAsync("layers/a/experts/1", 3, Bytes(LargeRecord, 1));
        await Db.KeyDeleteAsync($"{Version("layers/a/experts/1", 3)}:chunk:7");

        var error = await Assert.ThrowsAsync<CheckpointCorruptException>(() => Store.ReadAsync("layers/a/experts/1", 3));
        Assert.Equal($"checkpoint layers/a/experts/1 version 3 (redis {_prefix}:layers/a/experts/1:3) is corrupt: chunk 7 of 81 is missing", error.Message);
    }

    [Fact]
    public async Task A_chunk_of_another_length_is_reported_with_the_lengths()
    {
        await Store.WriteAsync(Key, 3, Bytes(3 * ChunkSize, 1));
        await Db.StringSetAsync($"{Version(Key, 3)}:chunk:2", Bytes(10, 2));

        var error = await Assert.ThrowsAsync<CheckpointCorruptException>(() => Store.ReadAsync(Key, 3));
        Assert.Equal($"checkpoint {Key} version 3 (redis {Version(Key, 3)}) is corrupt: length mismatch: the meta says {3 * ChunkSize} bytes, the chunks hold {2 * ChunkSize + 10}", error.Message);
    }

    [Fact]
    public async Task An_unreadable_meta_is_reported()
    {
        await Store.WriteAsync(Key, 3, Bytes(100, 1));
        await Db.StringSetAsync($"{Version(Key, 3)}:meta", "chunks=lots");
        var error = await Assert.ThrowsAsync<CheckpointCorruptException>(() => Store.ReadAsync(Key, 3));
        Assert.Equal($"checkpoint {Key} version 3 (redis {Version(Key, 3)}) is corrupt: meta has format (none); expected 1", error.Message);

        await Db.StringSetAsync($"{Version(Key, 3)}:meta", $"format=1 chunks=1000000000 length=100 sha256={new string('0', 64)}");
        error = await Assert.ThrowsAsync<CheckpointCorruptException>(() => Store.ReadAsync(Key, 3));
        Assert.Equal($"checkpoint {Key} version 3 (redis {Version(Key, 3)}) is corrupt: meta is inconsistent: 1000000000 chunks for 100 bytes", error.Message);
    }

    [Fact]
    public async Task A_reader_racing_a_rewrite_of_the_version_never_sees_a_mix()
    {
        // Same-sized records, so that only the checksum can tell old chunks from new ones.
        byte[][] records = [Bytes(8 * ChunkSize, 1), Bytes(8 * ChunkSize, 2)];
        await Store.WriteAsync(Key, 5, records[0]);
        using var done = new CancellationTokenSource();
        var writer = Task.Run(async () =>
        {
            for (var i = 1; i <= 40; i++)
            {
                await Store.WriteAsync(Key, 5, records[i % 2]);
                await Task.Delay(2);
            }
            await done.CancelAsync();
        });
        var reads = 0;
        var readers = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            while (!done.IsCancellationRequested)
            {
                byte[]? record;
                try { record = await Store.ReadAsync(Key, 5); }
                catch (InvalidOperationException) { continue; } // rewritten under every retry: refused, not mixed
                if (record is not null) Assert.True(record.AsSpan().SequenceEqual(records[0]) || record.AsSpan().SequenceEqual(records[1]));
                Interlocked.Increment(ref reads);
            }
        })).ToArray();
        await Task.WhenAll([writer, .. readers]);
        Assert.True(reads > 0);
        Assert.Equal(records[0], await Store.ReadAsync(Key, 5));
    }

    /// <summary>What a silo that died between the chunks and the meta leaves.</summary>
    private async Task WriteWithoutMetaAsync(string key, long version, int length)
    {
        await Db.SortedSetAddAsync($"{_prefix}:{key}:versions", version, version);
        var record = Bytes(length, (int)version);
        for (var i = 0; i < ChunksOf(length); i++)
            await Db.StringSetAsync($"{Version(key, version)}:chunk:{i}", record.AsMemory(i * ChunkSize, Math.Min(ChunkSize, length - i * ChunkSize)));
    }

    [Fact]
    public async Task A_version_without_meta_is_not_listed_or_read_and_is_pruned_when_old()
    {
        await WriteWithoutMetaAsync(Key, 1, 5 * ChunkSize);
        Assert.Empty(await Store.ListVersionsAsync(Key));
        Assert.Null(await Store.ReadAsync(Key, 1));

        await Store.WriteAsync(Key, 2, Bytes(100, 2));
        await WriteWithoutMetaAsync(Key, 9, 3 * ChunkSize); // newer than every committed version: perhaps a write in progress
        Assert.Equal(new long[] { 2L }, await Store.ListVersionsAsync(Key));
        await Store.WriteAsync(Key, 3, Bytes(100, 3));
        await Store.WriteAsync(Key, 4, Bytes(100, 4));

        Assert.Equal(new long[] { 3L, 4L }, await Store.ListVersionsAsync(Key));
        Assert.Empty(await KeysAsync($"{Version(Key, 1)}:*"));
        Assert.Empty(await KeysAsync($"{Version(Key, 2)}:*"));
        Assert.Equal(3, (await KeysAsync($"{Version(Key, 9)}:*")).Length);
        Assert.Equal(["3", "4", "9"], (await Db.SortedSetRangeByRankAsync($"{_prefix}:{Key}:versions")).Select(v => v.ToString()));
        Assert.Null(await Store.ReadAsync(Key, 9));
    }

    [Fact]
    public async Task Delete_removes_every_redis_key_of_the_key_and_no_other()
    {
        await Store.WriteAsync(Key, 1, Bytes(LargeRecord, 1));
        await Store.WriteAsync(Key, 2, Bytes(3 * ChunkSize, 2));
        await WriteWithoutMetaAsync(Key, 3, 2 * ChunkSize);
        await Store.WriteAsync("layers/ffn-3/experts/50", 1, Bytes(2 * ChunkSize, 3));

        await Store.DeleteAsync(Key);
        Assert.Empty(await KeysAsync($"{_prefix}:{Key}:*"));
        Assert.Equal(4, (await KeysAsync($"{_prefix}:*")).Length); // experts/50: two chunks, its meta, its versions
        Assert.Equal(Bytes(2 * ChunkSize, 3), await Store.ReadAsync("layers/ffn-3/experts/50", 1));
    }

    [Fact]
    public async Task A_write_whose_connection_is_killed_midway_is_done_again_and_a_read_survives_a_kill()
    {
        var options = ConfigurationOptions.Parse(TestRedis.Address);
        options.AllowAdmin = true; // for CLIENT ID
        await using var victim = await ConnectionMultiplexer.ConnectAsync(options);
        var warnings = new ListLogger(output);
        var store = new RedisCheckpointStore(victim, _prefix, ChunkSize) { Logger = warnings };
        // The store's connection is closed from another one, as a dropped connection would be. Its id
        // is asked on it, so it is the connection commands go over (reconnected after a kill).
        await using var admin = await ConnectionMultiplexer.ConnectAsync($"{TestRedis.Address},allowAdmin=true");
        var server = admin.GetServers()[0];
        async Task<string> VictimId() => (await victim.GetServers()[0].ExecuteAsync("CLIENT", "ID")).ToString();
        async Task Kill(string id) => Assert.Equal("1", (await server.ExecuteAsync("CLIENT", "KILL", "ID", id)).ToString()); // clients killed

        // 32 MiB in 512 chunks. Once chunks are stored, the server holds every write command
        // (CLIENT PAUSE WRITE), so the write cannot end and its next command waits unanswered on the
        // connection: the kill then fails a command the store has sent, never one the client still
        // holds back (those it sends again by itself after reconnecting, and the store sees nothing).
        var record = Bytes(32 << 20, 7);
        var id = await VictimId();
        var write = store.WriteAsync(Key, 1, record);
        while (!await Db.KeyExistsAsync($"{Version(Key, 1)}:chunk:8")) await Task.Delay(1);
        await server.ExecuteAsync("CLIENT", "PAUSE", "10000", "WRITE");
        try
        {
            await Task.Delay(200);
            Assert.False(write.IsCompleted, "the write ended before its connection was killed");
            await Kill(id);
        }
        finally
        {
            await server.ExecuteAsync("CLIENT", "UNPAUSE");
        }
        await write;
        Assert.Contains(warnings.Lines, l => l.StartsWith("Checkpoint store: the ", StringComparison.Ordinal) && l.Contains($" of {Key} version 1 lost its Redis connection", StringComparison.Ordinal));
        Assert.Equal(record, await Store.ReadAsync(Key, 1));

        // A read killed midway: the store repeats what failed, the client resends what it held.
        id = await VictimId();
        var read = store.ReadAsync(Key, 1);
        await Kill(id);
        Assert.Equal(record, await read);
        Assert.Equal(new long[] { 1L }, await store.ListVersionsAsync(Key));
    }

    [Fact]
    public async Task A_connection_that_stays_lost_fails_the_write_after_the_reconnect_timeout()
    {
        // A server that accepts the connection, then is gone: nothing listens on the port any more.
        await using var redis = new MoeCluster.Client.Tests.RedisProcess();
        await redis.StartAsync();
        var options = ConfigurationOptions.Parse(redis.Address);
        options.AbortOnConnectFail = false;
        await using var connection = await ConnectionMultiplexer.ConnectAsync(options);
        var store = new RedisCheckpointStore(connection, _prefix, ChunkSize) { ReconnectTimeout = TimeSpan.FromSeconds(1) };
        await store.WriteAsync(Key, 1, Bytes(1000, 1));
        await redis.StopAsync();

        var clock = System.Diagnostics.Stopwatch.StartNew();
        await Assert.ThrowsAnyAsync<RedisConnectionException>(() => store.WriteAsync(Key, 2, Bytes(1000, 2)));
        Assert.InRange(clock.Elapsed.TotalSeconds, 0.5, 10);
    }

    /// <summary>Keeps the messages of warnings, for the store's log lines.</summary>
    private sealed class ListLogger(Xunit.Abstractions.ITestOutputHelper output) : Microsoft.Extensions.Logging.ILogger
    {
        private readonly System.Diagnostics.Stopwatch clock = System.Diagnostics.Stopwatch.StartNew();
        public System.Collections.Concurrent.ConcurrentQueue<string> Lines { get; } = new();
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;
        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            Lines.Enqueue(formatter(state, exception));
            output.WriteLine($"{clock.ElapsedMilliseconds} ms: {formatter(state, exception)}");
        }
    }

    [Fact]
    public async Task The_default_chunk_size_is_one_mebibyte()
    {
        var store = new RedisCheckpointStore(_redis, _prefix);
        Assert.Equal(1 << 20, store.ChunkSize);
        await store.WriteAsync(Key, 1, Bytes(LargeRecord, 1));
        Assert.Equal(6, (await KeysAsync($"{Version(Key, 1)}:chunk:*")).Length);
        Assert.Equal(Bytes(LargeRecord, 1), await Store.ReadAsync(Key, 1)); // read with another chunk size: the meta says how many
    }

    [Fact]
    public async Task ConnectAsync_opens_a_connection_of_its_own()
    {
        await using (var store = await RedisCheckpointStore.ConnectAsync(TestRedis.Address, _prefix))
        {
            await store.WriteAsync(Key, 1, Bytes(1000, 1));
            Assert.Equal(_prefix, store.Prefix);
        }
        Assert.Equal(Bytes(1000, 1), await Store.ReadAsync(Key, 1));
    }

    [Fact]
    public async Task Bad_options_are_refused()
    {
        var error = Assert.Throws<ArgumentException>(() => new RedisCheckpointStore(_redis, ""));
        Assert.Equal("checkpoint key prefix is empty; expected one such as moe:{clusterId}:ckpt", error.Message);
        error = Assert.Throws<ArgumentException>(() => new RedisCheckpointStore(_redis, _prefix, chunkSize: 0));
        Assert.Equal("checkpoint chunk size is 0 bytes; expected 1 to 536870912 (512 MiB, Redis's largest value)", error.Message);
        error = await Assert.ThrowsAsync<ArgumentException>(() => RedisCheckpointStore.ConnectAsync(" ", _prefix));
        Assert.Equal("checkpoint Redis address is empty; expected host:port", error.Message);
    }
}
