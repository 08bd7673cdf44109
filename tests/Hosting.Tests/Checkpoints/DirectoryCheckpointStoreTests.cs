using MoeCluster.Grains.Checkpoints;
using MoeCluster.Hosting.Checkpoints;
using Xunit;

namespace MoeCluster.Hosting.Tests.Checkpoints;

/// <summary>The contract on a fresh directory per test, and what only files can go through: torn writes and damaged bytes.</summary>
public sealed class DirectoryCheckpointStoreTests : CheckpointStoreContract
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "moe-checkpoint-tests", Guid.NewGuid().ToString("N"));

    private DirectoryCheckpointStore Files => (DirectoryCheckpointStore)Store;

    protected override Task<ICheckpointStore> CreateStoreAsync() => Task.FromResult<ICheckpointStore>(new DirectoryCheckpointStore(_root));

    protected override Task DestroyStoreAsync()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
        return Task.CompletedTask;
    }

    private string KeyDirectory => Path.Combine(_root, "layers", "ffn-3", "experts", "5");

    private string[] FileNames() => Directory.GetFiles(KeyDirectory).Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal).ToArray();

    [Fact]
    public void The_root_is_created()
    {
        var root = Path.Combine(_root, "nested", "checkpoints");
        var store = new DirectoryCheckpointStore(root);
        Assert.True(Directory.Exists(root));
        Assert.Equal(root, store.Root);
    }

    [Fact]
    public async Task A_key_is_a_directory_and_a_version_one_file_named_to_sort()
    {
        await Store.WriteAsync(Key, 42, Bytes(10, 1));
        Assert.Equal(Path.Combine(KeyDirectory, "v000000000042.ckpt"), Files.FilePath(Key, 42));
        Assert.Equal(["v000000000042.ckpt"], FileNames());
        Assert.Equal(CheckpointFileFormat.HeaderLength + 10, new FileInfo(Files.FilePath(Key, 42)).Length);
    }

    [Fact]
    public async Task Pruned_versions_leave_no_file_behind()
    {
        for (var version = 1; version <= 5; version++)
            await Store.WriteAsync(Key, version, Bytes(100, version));
        Assert.Equal(["v000000000004.ckpt", "v000000000005.ckpt"], FileNames());
    }

    [Fact]
    public async Task A_flipped_byte_is_reported_as_a_checksum_mismatch()
    {
        await Store.WriteAsync("layers/a/experts/1", 3, Bytes(LargeRecord, 1));
        var path = Files.FilePath("layers/a/experts/1", 3);
        var bytes = await File.ReadAllBytesAsync(path);
        bytes[CheckpointFileFormat.HeaderLength + 1_000_000] ^= 0x01;
        await File.WriteAllBytesAsync(path, bytes);

        var error = await Assert.ThrowsAsync<CheckpointCorruptException>(() => Store.ReadAsync("layers/a/experts/1", 3));
        Assert.Equal($"checkpoint layers/a/experts/1 version 3 ({path}) is corrupt: checksum mismatch", error.Message);
    }

    [Fact]
    public async Task A_truncated_file_is_reported_with_the_lengths()
    {
        await Store.WriteAsync(Key, 3, Bytes(1000, 1));
        var path = Files.FilePath(Key, 3);
        using (var file = new FileStream(path, FileMode.Open)) file.SetLength(CheckpointFileFormat.HeaderLength + 600);
        var error = await Assert.ThrowsAsync<CheckpointCorruptException>(() => Store.ReadAsync(Key, 3));
        Assert.Equal($"checkpoint {Key} version 3 ({path}) is corrupt: record length mismatch: the header says 1000 bytes, the file holds 600", error.Message);

        using (var file = new FileStream(path, FileMode.Open)) file.SetLength(20);
        error = await Assert.ThrowsAsync<CheckpointCorruptException>(() => Store.ReadAsync(Key, 3));
        Assert.Equal($"checkpoint {Key} version 3 ({path}) is corrupt: truncated: the file has 20 bytes, fewer than the 52-byte header", error.Message);
    }

    [Fact]
    public async Task A_file_that_is_not_a_checkpoint_is_reported()
    {
        await Store.WriteAsync(Key, 3, Bytes(1000, 1));
        var path = Files.FilePath(Key, 3);
        var bytes = await File.ReadAllBytesAsync(path);
        bytes[0] = (byte)'X';
        await File.WriteAllBytesAsync(path, bytes);
        var error = await Assert.ThrowsAsync<CheckpointCorruptException>(() => Store.ReadAsync(Key, 3));
        Assert.Equal($"checkpoint {Key} version 3 ({path}) is corrupt: bad magic bytes (not a MoeCluster checkpoint file)", error.Message);

        bytes[0] = (byte)'M';
        bytes[8] = 2;
        await File.WriteAllBytesAsync(path, bytes);
        error = await Assert.ThrowsAsync<CheckpointCorruptException>(() => Store.ReadAsync(Key, 3));
        Assert.Equal($"checkpoint {Key} version 3 ({path}) is corrupt: format version 2; expected 1", error.Message);
    }

    [Fact]
    public async Task The_temporary_file_of_an_interrupted_write_is_ignored()
    {
        await Store.WriteAsync(Key, 3, Bytes(1000, 3));
        // What a silo that died during a write leaves: a partial temporary file, here of the same
        // version that is committed and of the next one.
        var sameVersion = Path.Combine(KeyDirectory, ".v000000000003.ckpt.0123456789abcdef0123456789abcdef.tmp");
        var nextVersion = Path.Combine(KeyDirectory, ".v000000000004.ckpt.fedcba9876543210fedcba9876543210.tmp");
        await File.WriteAllBytesAsync(sameVersion, Bytes(30, 30));
        await File.WriteAllBytesAsync(nextVersion, Bytes(70, 70));

        Assert.Equal(new long[] { 3L }, await Store.ListVersionsAsync(Key));
        Assert.Equal(Bytes(1000, 3), await Store.ReadAsync(Key, 3));
        Assert.Null(await Store.ReadAsync(Key, 4));

        // Writing that version afterwards works, and the stray files do not count as versions to keep.
        await Store.WriteAsync(Key, 4, Bytes(1000, 4));
        await Store.WriteAsync(Key, 5, Bytes(1000, 5));
        Assert.Equal(new long[] { 4L, 5L }, await Store.ListVersionsAsync(Key));
        Assert.Equal(Bytes(1000, 4), await Store.ReadAsync(Key, 4));

        await Store.DeleteAsync(Key);
        Assert.False(Directory.Exists(KeyDirectory));
    }

    [Fact]
    public async Task A_successful_write_leaves_no_temporary_file()
    {
        await Task.WhenAll(Enumerable.Range(1, 8).Select(v => Store.WriteAsync(Key, 7, Bytes(10_000, v))));
        Assert.Equal(["v000000000007.ckpt"], FileNames());
        Assert.Equal(10_000, (await Store.ReadAsync(Key, 7))!.Length);
    }

    [Fact]
    public async Task Deleting_a_parent_key_keeps_its_children_on_disk()
    {
        await Store.WriteAsync("layers/a", 1, Bytes(10, 1));
        await Store.WriteAsync("layers/a/experts/1", 1, Bytes(10, 2));
        await Store.DeleteAsync("layers/a");
        Assert.False(File.Exists(Files.FilePath("layers/a", 1)));
        Assert.True(File.Exists(Files.FilePath("layers/a/experts/1", 1)));

        await Store.DeleteAsync("layers/a/experts/1");
        Assert.False(Directory.Exists(Path.Combine(_root, "layers", "a", "experts", "1")));
    }

    [Fact]
    public void An_empty_root_is_refused()
    {
        var error = Assert.Throws<ArgumentException>(() => new DirectoryCheckpointStore(" "));
        Assert.Equal("checkpoint directory is empty; expected a directory path such as ./data/checkpoints", error.Message);
    }
}
