namespace MoeCluster.Hosting.Checkpoints;

/// <summary>
/// What every store accepts as a key and a version, so that a key means the same thing in each
/// (a cluster may move from a directory to Redis): <c>/</c>-separated segments of
/// <c>[A-Za-z0-9._-]</c>, which map one-to-one onto a relative path.
/// </summary>
public static class CheckpointKeys
{
    public const string Rule =
        "expected '/'-separated segments of A-Z a-z 0-9 . _ - (none empty, '.' or '..', none ending in .ckpt or .tmp)";

    public static void Validate(string key)
    {
        if (string.IsNullOrEmpty(key))
            throw new ArgumentException($"checkpoint key is empty; {Rule}");
        foreach (var c in key)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or '/'))
                throw new ArgumentException($"checkpoint key '{key}' has the character '{c}'; {Rule}");
        foreach (var segment in key.Split('/'))
        {
            if (segment.Length == 0)
                throw new ArgumentException($"checkpoint key '{key}' has an empty segment; {Rule}");
            if (segment is "." or "..")
                throw new ArgumentException($"checkpoint key '{key}' has the segment '{segment}'; {Rule}");
            // The directory store names its own files so; a key segment of that shape would collide with them.
            if (segment.EndsWith(".ckpt", StringComparison.Ordinal) || segment.EndsWith(".tmp", StringComparison.Ordinal))
                throw new ArgumentException($"checkpoint key '{key}' has the segment '{segment}', which is reserved for the store's files; {Rule}");
        }
    }

    public static void ValidateVersion(long version)
    {
        if (version < 0)
            throw new ArgumentException($"checkpoint version is {version}; expected ≥ 0");
    }
}
