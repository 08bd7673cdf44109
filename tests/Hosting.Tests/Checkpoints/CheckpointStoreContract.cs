using MoeCluster.Grains.Checkpoints;
using Xunit;

namespace MoeCluster.Hosting.Tests.Checkpoints;

/// <summary>
/// What every <see cref="ICheckpointStore"/> does, run against each store by a subclass that
/// creates a fresh, private one per test.
/// </summary>
public abstract class CheckpointStoreContract : IAsyncLifetime
{
    protected const string Key = "layers/ffn-3/experts/5";

    /// <summary>Bigger than several Redis chunks of the tests' chunk size, and not a multiple of it.</summary>
    protected const int LargeRecord = 5 * 1024 * 1024 + 123;

    protected ICheckpointStore Store { get; private set; } = null!;

    protected abstract Task<ICheckpointStore> CreateStoreAsync();

    protected abstract Task DestroyStoreAsync();

    public async Task InitializeAsync() => Store = await CreateStoreAsync();

    public Task DisposeAsync() => DestroyStoreAsync();

    protected static byte[] Bytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(1000)]
    [InlineData(LargeRecord)]
    public async Task A_record_reads_back_byte_for_byte(int length)
    {
        var record = Bytes(length, seed: length);
        await Store.WriteAsync(Key, 7, record);
        Assert.Equal(record, await Store.ReadAsync(Key, 7));
        Assert.Equal(new long[] { 7L }, await Store.ListVersionsAsync(Key));
    }

    [Fact]
    public async Task A_version_or_key_never_written_reads_as_null_and_lists_empty()
    {
        Assert.Null(await Store.ReadAsync(Key, 1));
        Assert.Empty(await Store.ListVersionsAsync(Key));
        await Store.WriteAsync(Key, 1, Bytes(10, 1));
        Assert.Null(await Store.ReadAsync(Key, 2));
        Assert.Null(await Store.ReadAsync("layers/ffn-3/experts/6", 1));
        await Store.DeleteAsync("layers/never/written"); // nothing to delete is not an error
    }

    [Fact]
    public async Task Only_the_two_newest_versions_are_kept()
    {
        for (var version = 1; version <= 3; version++)
            await Store.WriteAsync(Key, version, Bytes(1000 * version, version));
        Assert.Equal(new long[] { 2L, 3L }, await Store.ListVersionsAsync(Key));
        Assert.Null(await Store.ReadAsync(Key, 1));
        Assert.Equal(Bytes(2000, 2), await Store.ReadAsync(Key, 2));
        Assert.Equal(Bytes(3000, 3), await Store.ReadAsync(Key, 3));

        // An older version written late is older than the two kept, so it goes at once.
        await Store.WriteAsync(Key, 1, Bytes(10, 1));
        Assert.Equal(new long[] { 2L, 3L }, await Store.ListVersionsAsync(Key));
    }

    [Fact]
    public async Task Versions_are_ordered_as_numbers_not_as_text()
    {
        await Store.WriteAsync(Key, 10, Bytes(10, 10));
        await Store.WriteAsync(Key, 9, Bytes(9, 9));
        Assert.Equal(new long[] { 9L, 10L }, await Store.ListVersionsAsync(Key));
        await Store.WriteAsync(Key, 10_000_000_000_000, Bytes(13, 13));
        Assert.Equal(new long[] { 10L, 10_000_000_000_000L }, await Store.ListVersionsAsync(Key));
        Assert.Equal(Bytes(13, 13), await Store.ReadAsync(Key, 10_000_000_000_000));
    }

    [Fact]
    public async Task Writing_a_version_again_replaces_it()
    {
        await Store.WriteAsync(Key, 4, Bytes(LargeRecord, 1));
        await Store.WriteAsync(Key, 4, Bytes(100, 2));
        Assert.Equal(Bytes(100, 2), await Store.ReadAsync(Key, 4));
        await Store.WriteAsync(Key, 4, Bytes(LargeRecord, 3));
        Assert.Equal(Bytes(LargeRecord, 3), await Store.ReadAsync(Key, 4));
        await Store.WriteAsync(Key, 4, Array.Empty<byte>());
        Assert.Equal(Array.Empty<byte>(), await Store.ReadAsync(Key, 4));
        Assert.Equal(new long[] { 4L }, await Store.ListVersionsAsync(Key));
    }

    public static TheoryData<string, string> BadKeys() => new()
    {
        { "", "checkpoint key is empty; " + Rule },
        { "layers/../experts/1", "checkpoint key 'layers/../experts/1' has the segment '..'; " + Rule },
        { "..", "checkpoint key '..' has the segment '..'; " + Rule },
        { "layers/./experts", "checkpoint key 'layers/./experts' has the segment '.'; " + Rule },
        { "layers//experts", "checkpoint key 'layers//experts' has an empty segment; " + Rule },
        { "/layers/a", "checkpoint key '/layers/a' has an empty segment; " + Rule },
        { "layers/a/", "checkpoint key 'layers/a/' has an empty segment; " + Rule },
        { "layers/a b", "checkpoint key 'layers/a b' has the character ' '; " + Rule },
        { "layers:a", "checkpoint key 'layers:a' has the character ':'; " + Rule },
        { @"layers\a", @"checkpoint key 'layers\a' has the character '\'; " + Rule },
        { "layers/é", "checkpoint key 'layers/é' has the character 'é'; " + Rule },
        { "layers/*", "checkpoint key 'layers/*' has the character '*'; " + Rule },
        { "layers/a/v000000000001.ckpt", "checkpoint key 'layers/a/v000000000001.ckpt' has the segment 'v000000000001.ckpt', which is reserved for the store's files; " + Rule },
        { "layers/x.tmp/b", "checkpoint key 'layers/x.tmp/b' has the segment 'x.tmp', which is reserved for the store's files; " + Rule },
    };

    private const string Rule = "expected '/'-separated segments of A-Z a-z 0-9 . _ - (none empty, '.' or '..', none ending in .ckpt or .tmp)";

    [Theory]
    [MemberData(nameof(BadKeys))]
    public async Task A_bad_key_is_refused_by_every_method(string key, string message)
    {
        Assert.Equal(message, (await Assert.ThrowsAsync<ArgumentException>(() => Store.WriteAsync(key, 1, new byte[1]))).Message);
        Assert.Equal(message, (await Assert.ThrowsAsync<ArgumentException>(() => Store.ReadAsync(key, 1))).Message);
        Assert.Equal(message, (await Assert.ThrowsAsync<ArgumentException>(() => Store.ListVersionsAsync(key))).Message);
        Assert.Equal(message, (await Assert.ThrowsAsync<ArgumentException>(() => Store.DeleteAsync(key))).Message);
    }

    [Fact]
    public async Task Good_keys_of_every_allowed_character_are_accepted()
    {
        const string key = "Layers_2/ffn-3.a/EXPERTS/..5/.hidden/x.ckpt2";
        await Store.WriteAsync(key, 1, Bytes(5, 5));
        Assert.Equal(Bytes(5, 5), await Store.ReadAsync(key, 1));
    }

    [Fact]
    public async Task A_negative_version_is_refused()
    {
        var error = await Assert.ThrowsAsync<ArgumentException>(() => Store.WriteAsync(Key, -1, new byte[1]));
        Assert.Equal("checkpoint version is -1; expected ≥ 0", error.Message);
        error = await Assert.ThrowsAsync<ArgumentException>(() => Store.ReadAsync(Key, -1));
        Assert.Equal("checkpoint version is -1; expected ≥ 0", error.Message);
    }

    [Fact]
    public async Task Keys_are_isolated_and_delete_removes_one_key_only()
    {
        // Including a key that is the parent of another, and one that extends another's last segment.
        string[] keys = ["layers/a", "layers/a/experts/1", "layers/a/experts/2", "layers/a/experts/10"];
        for (var k = 0; k < keys.Length; k++)
            for (var version = 1; version <= 2; version++)
                await Store.WriteAsync(keys[k], version, Bytes(100 + k, 10 * k + version));

        for (var k = 0; k < keys.Length; k++)
        {
            Assert.Equal(new long[] { 1L, 2L }, await Store.ListVersionsAsync(keys[k]));
            Assert.Equal(Bytes(100 + k, 10 * k + 2), await Store.ReadAsync(keys[k], 2));
        }

        await Store.DeleteAsync("layers/a");
        await Store.DeleteAsync("layers/a/experts/1");
        Assert.Empty(await Store.ListVersionsAsync("layers/a"));
        Assert.Null(await Store.ReadAsync("layers/a", 2));
        Assert.Empty(await Store.ListVersionsAsync("layers/a/experts/1"));
        for (var k = 2; k < keys.Length; k++)
        {
            Assert.Equal(new long[] { 1L, 2L }, await Store.ListVersionsAsync(keys[k]));
            Assert.Equal(Bytes(100 + k, 10 * k + 1), await Store.ReadAsync(keys[k], 1));
        }

        // A deleted key can be written again.
        await Store.WriteAsync("layers/a", 5, Bytes(3, 3));
        Assert.Equal(new long[] { 5L }, await Store.ListVersionsAsync("layers/a"));
    }

    [Fact]
    public async Task Concurrent_writes_of_different_keys_all_succeed()
    {
        var keys = Enumerable.Range(0, 24).Select(e => $"layers/ffn-{e % 3}/experts/{e}").ToArray();
        await Task.WhenAll(keys.Select((key, k) => Task.Run(async () =>
        {
            for (var version = 1; version <= 3; version++)
                await Store.WriteAsync(key, version, Bytes(200_000 + k, 100 * k + version));
        })));
        await Task.WhenAll(keys.Select((key, k) => Task.Run(async () =>
        {
            Assert.Equal(new long[] { 2L, 3L }, await Store.ListVersionsAsync(key));
            Assert.Equal(Bytes(200_000 + k, 100 * k + 3), await Store.ReadAsync(key, 3));
            Assert.Equal(Bytes(200_000 + k, 100 * k + 2), await Store.ReadAsync(key, 2));
        })));
    }

    [Fact]
    public async Task A_cancelled_write_stores_nothing()
    {
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Store.WriteAsync(Key, 1, Bytes(100, 1), cancelled.Token));
        Assert.Empty(await Store.ListVersionsAsync(Key));
        Assert.Null(await Store.ReadAsync(Key, 1));
    }
}
