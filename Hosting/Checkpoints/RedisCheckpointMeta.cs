using System.Globalization;

namespace MoeCluster.Hosting.Checkpoints;

/// <summary>
/// The commit marker of a Redis checkpoint version, readable with redis-cli:
/// <c>format=1 chunks=3 length=2621440 sha256=…</c> (SHA-256 of the whole record, lower-case hex).
/// </summary>
public sealed record RedisCheckpointMeta(int Chunks, long Length, string Sha256)
{
    public const int FormatVersion = 1;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"format={FormatVersion} chunks={Chunks} length={Length} sha256={Sha256}");

    /// <summary>The meta in <paramref name="text"/>, or null with what is wrong with it.</summary>
    public static RedisCheckpointMeta? Parse(string text, out string? problem)
    {
        var fields = new Dictionary<string, string>();
        foreach (var field in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = field.IndexOf('=');
            if (eq > 0) fields[field[..eq]] = field[(eq + 1)..];
        }
        problem = null;
        if (!fields.TryGetValue("format", out var format) || format != FormatVersion.ToString(CultureInfo.InvariantCulture))
            problem = $"meta has format {format ?? "(none)"}; expected {FormatVersion}";
        else if (!fields.TryGetValue("chunks", out var c) || !int.TryParse(c, NumberStyles.None, CultureInfo.InvariantCulture, out var chunks)
                 || !fields.TryGetValue("length", out var l) || !long.TryParse(l, NumberStyles.None, CultureInfo.InvariantCulture, out var length)
                 || !fields.TryGetValue("sha256", out var sha) || sha.Length != 64)
            problem = $"meta is unreadable: '{text}'; expected 'format=1 chunks=N length=N sha256=HEX'";
        // Checked before a reader asks for that many chunks.
        else if (chunks > length || (length > 0 && chunks == 0) || length > Array.MaxLength)
            problem = $"meta is inconsistent: {chunks} chunks for {length} bytes";
        else
            return new RedisCheckpointMeta(chunks, length, sha);
        return null;
    }
}
