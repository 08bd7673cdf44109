using System.Buffers.Binary;
using System.Security.Cryptography;

namespace MoeCluster.Hosting.Checkpoints;

/// <summary>
/// The header of a checkpoint file, little-endian: 8 magic bytes <c>MOECKPT\0</c>, the format
/// version (uint32, 1), the record length (int64) and the SHA-256 of the record; the record follows.
/// A reader checks all four, so a torn, truncated or bit-rotted file is reported, never returned.
/// </summary>
public static class CheckpointFileFormat
{
    public const int FormatVersion = 1;
    public const int HeaderLength = 8 + 4 + 8 + 32;
    private static ReadOnlySpan<byte> Magic => "MOECKPT\0"u8;

    public static byte[] Header(ReadOnlySpan<byte> record)
    {
        var header = new byte[HeaderLength];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), FormatVersion);
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(12), record.Length);
        SHA256.HashData(record, header.AsSpan(20, 32));
        return header;
    }

    /// <summary>The record length the header announces, after checking it against the file's size; or what is wrong.</summary>
    public static string? CheckHeader(ReadOnlySpan<byte> header, long fileLength, out int recordLength)
    {
        recordLength = 0;
        if (fileLength < HeaderLength)
            return $"truncated: the file has {fileLength} bytes, fewer than the {HeaderLength}-byte header";
        if (!header[..8].SequenceEqual(Magic))
            return "bad magic bytes (not a MoeCluster checkpoint file)";
        var format = BinaryPrimitives.ReadUInt32LittleEndian(header[8..]);
        if (format != FormatVersion)
            return $"format version {format}; expected {FormatVersion}";
        var length = BinaryPrimitives.ReadInt64LittleEndian(header[12..]);
        if (length != fileLength - HeaderLength)
            return $"record length mismatch: the header says {length} bytes, the file holds {fileLength - HeaderLength}";
        if (length > Array.MaxLength)
            return $"record length {length} is more than one array holds";
        recordLength = (int)length;
        return null;
    }

    /// <summary>Null when <paramref name="record"/> has the header's checksum; otherwise what is wrong.</summary>
    public static string? CheckRecord(ReadOnlySpan<byte> header, ReadOnlySpan<byte> record)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(record, hash);
        return hash.SequenceEqual(header.Slice(20, 32)) ? null : "checksum mismatch";
    }
}
