using System.Globalization;
using MoeCluster.Grains.Checkpoints;

namespace MoeCluster.Hosting.Checkpoints;

/// <summary>
/// Checkpoints as files under a root directory (the embedded default; also a volume the silos
/// share). Key <c>layers/ffn-3/experts/5</c> is the directory <c>{root}/layers/ffn-3/experts/5</c>;
/// version 42 of it is the file <c>v000000000042.ckpt</c> there (<see cref="CheckpointFileFormat"/>).
/// A write goes to <c>.v000000000042.ckpt.{guid}.tmp</c> in the same directory, is flushed to disk
/// and then renamed over the final name, so a reader sees the old file or the new one, never a part.
/// </summary>
public sealed class DirectoryCheckpointStore : ICheckpointStore
{
    /// <summary>How many versions of a key survive a write: the newest and the one before, in case the newest is lost.</summary>
    public const int VersionsKept = 2;

    public DirectoryCheckpointStore(string root)
    {
        if (string.IsNullOrWhiteSpace(root))
            throw new ArgumentException("checkpoint directory is empty; expected a directory path such as ./data/checkpoints");
        Root = Path.GetFullPath(root);
        Directory.CreateDirectory(Root);
    }

    /// <summary>The root directory, as a full path.</summary>
    public string Root { get; }

    /// <summary>The file that holds <paramref name="version"/> of <paramref name="key"/> (whether or not it exists).</summary>
    public string FilePath(string key, long version)
    {
        CheckpointKeys.ValidateVersion(version);
        return Path.Combine(KeyDirectory(key), FileName(version));
    }

    public async Task WriteAsync(string key, long version, ReadOnlyMemory<byte> record, CancellationToken cancellationToken = default)
    {
        var path = FilePath(key, version);
        var directory = Path.GetDirectoryName(path)!;
        var temp = Path.Combine(directory, $".{FileName(version)}.{Guid.NewGuid():N}.tmp");
        var header = CheckpointFileFormat.Header(record.Span);
        try
        {
            await using (var file = await CreateTempFile(directory, temp))
            {
                await file.WriteAsync(header, cancellationToken);
                await file.WriteAsync(record, cancellationToken);
                file.Flush(flushToDisk: true);
            }
            cancellationToken.ThrowIfCancellationRequested();
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
        // The write is committed; pruning is housekeeping and is not cancelled half-way.
        foreach (var old in Versions(directory).OrderDescending().Skip(VersionsKept))
            TryDelete(Path.Combine(directory, FileName(old)));
    }

    public async Task<byte[]?> ReadAsync(string key, long version, CancellationToken cancellationToken = default)
    {
        var path = FilePath(key, version);
        FileStream file;
        try
        {
            file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1 << 16, FileOptions.Asynchronous);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }
        await using (file)
        {
            var header = new byte[CheckpointFileFormat.HeaderLength];
            var headerRead = await file.ReadAtLeastAsync(header, header.Length, throwOnEndOfStream: false, cancellationToken);
            var fileLength = headerRead < header.Length ? headerRead : file.Length;
            var problem = CheckpointFileFormat.CheckHeader(header, fileLength, out var length);
            if (problem is not null) throw Corrupt(key, version, path, problem);
            var record = new byte[length];
            await file.ReadExactlyAsync(record, cancellationToken);
            problem = CheckpointFileFormat.CheckRecord(header, record);
            if (problem is not null) throw Corrupt(key, version, path, problem);
            return record;
        }
    }

    public Task<long[]> ListVersionsAsync(string key, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return Task.FromResult(Versions(KeyDirectory(key)).Order().ToArray());
    }

    /// <summary>
    /// Removes the key's files and then its directory if that is empty: a key may be the parent of
    /// another (<c>layers/a</c> and <c>layers/a/experts/1</c>), whose checkpoints stay.
    /// </summary>
    public Task DeleteAsync(string key, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var directory = KeyDirectory(key);
        if (!Directory.Exists(directory)) return Task.CompletedTask;
        foreach (var file in Directory.EnumerateFiles(directory, "v*.ckpt").Concat(Directory.EnumerateFiles(directory, ".v*.tmp")))
            TryDelete(file);
        try { Directory.Delete(directory, recursive: false); }
        catch (IOException) { } // not empty: another key lives below this one, or a file that is not ours
        return Task.CompletedTask;
    }

    private string KeyDirectory(string key)
    {
        CheckpointKeys.Validate(key);
        return Path.Combine(Root, key.Replace('/', Path.DirectorySeparatorChar));
    }

    private static string FileName(long version) => $"v{version.ToString("D12", CultureInfo.InvariantCulture)}.ckpt";

    /// <summary>The versions whose final file exists; temporary files of writes in progress (or interrupted) are not versions.</summary>
    private static IEnumerable<long> Versions(string directory)
    {
        if (!Directory.Exists(directory)) return [];
        try
        {
            return Directory.EnumerateFiles(directory, "v*.ckpt")
                .Select(file => Path.GetFileName(file))
                .Select(name => name.Length > 6 && name[1..^5].All(char.IsAsciiDigit)
                    && long.TryParse(name[1..^5], NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v : -1)
                .Where(v => v >= 0)
                .ToArray();
        }
        catch (DirectoryNotFoundException)
        {
            return []; // deleted while listing
        }
    }

    /// <summary>Creates the temporary file, and the key's directory again if a concurrent delete of a parent key removed it while empty.</summary>
    private static async Task<FileStream> CreateTempFile(string directory, string temp)
    {
        for (var attempt = 1; ; attempt++)
        {
            Directory.CreateDirectory(directory);
            try
            {
                return new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, FileOptions.Asynchronous);
            }
            catch (DirectoryNotFoundException) when (attempt < 3)
            {
                await Task.Yield();
            }
        }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private static CheckpointCorruptException Corrupt(string key, long version, string path, string problem) =>
        new($"checkpoint {key} version {version} ({path}) is corrupt: {problem}");
}
