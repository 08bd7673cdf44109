using System.Buffers;
using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Unicode;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Client;

/// <summary>
/// Reads and writes the safetensors format, the one <c>safetensors.torch.save_file</c> and
/// <c>load_file</c> use: an 8-byte little-endian header size N, N bytes of UTF-8 JSON that give
/// each tensor's dtype, shape and byte range (and an optional <c>__metadata__</c> object of
/// strings), then the tensors' bytes, row-major and little-endian, packed without gaps. Each
/// tensor's bytes are copied once each way, straight between the tensor's memory and the stream.
/// </summary>
public static class SafeTensorsFile
{
    private const string MetadataKey = "__metadata__";
    // The reference reader refuses larger headers; so does this one, before allocating for it.
    private const long MaxHeaderSize = 100_000_000;
    // Tensor.bytes spans at most int.MaxValue bytes; larger tensors are copied in blocks this size.
    private const long BlockBytes = 1L << 30;

    private readonly record struct DType(string Name, ScalarType Type, int Size);

    private static readonly DType[] DTypes =
    [
        new("BOOL", ScalarType.Bool, 1), new("U8", ScalarType.Byte, 1), new("I8", ScalarType.Int8, 1),
        new("I16", ScalarType.Int16, 2), new("I32", ScalarType.Int32, 4), new("I64", ScalarType.Int64, 8),
        new("F16", ScalarType.Float16, 2), new("BF16", ScalarType.BFloat16, 2), new("F32", ScalarType.Float32, 4),
        new("F64", ScalarType.Float64, 8), new("C64", ScalarType.ComplexFloat32, 8),
    ];

    private sealed record Entry(string Name, DType DType, long[] Shape, long Begin, long End);

    private delegate void BlockAction(Span<byte> block);

    /// <summary>
    /// Writes <paramref name="tensors"/> (any device, any layout) and <paramref name="metadata"/> to
    /// <paramref name="path"/>. The file is written beside the target and renamed over it, so a
    /// failed write leaves an existing file whole.
    /// </summary>
    public static void Write(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var target = Path.GetFullPath(path);
        var temp = $"{target}.{Guid.NewGuid():N}.tmp";
        try
        {
            // Unbuffered: each tensor goes from its memory to the file in one write.
            using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 0))
                Write(file, tensors, metadata);
            File.Move(temp, target, overwrite: true);
        }
        catch
        {
            if (File.Exists(temp)) File.Delete(temp);
            throw;
        }
    }

    /// <summary>
    /// Writes <paramref name="tensors"/> and <paramref name="metadata"/> to <paramref name="stream"/>.
    /// Tensors and metadata keys go in ordinal name order, so the same tensors and metadata always
    /// give the same bytes. Nothing is written when an argument is refused.
    /// </summary>
    public static void Write(Stream stream, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(tensors);
        if (!stream.CanWrite)
            throw new ArgumentException("stream is not writable; expected a writable stream", nameof(stream));

        var entries = new List<(Entry Entry, Tensor Tensor)>(tensors.Count);
        long offset = 0;
        foreach (var name in tensors.Keys.Order(StringComparer.Ordinal))
        {
            if (name.Length == 0)
                throw new ArgumentException("a tensor has an empty name; expected a non-empty name", nameof(tensors));
            if (name == MetadataKey)
                throw new ArgumentException($"a tensor is named \"{MetadataKey}\", which the format keeps for metadata; expected another name", nameof(tensors));
            var t = tensors[name] ?? throw new ArgumentException($"tensor \"{name}\" is null; expected a tensor", nameof(tensors));
            var dtype = Array.Find(DTypes, d => d.Type == t.dtype);
            if (dtype.Name is null)
                throw new ArgumentException(
                    $"tensor \"{name}\" has dtype {t.dtype}; expected one of {string.Join(", ", DTypes.Select(d => d.Type))}", nameof(tensors));
            var bytes = t.NumberOfElements * dtype.Size;
            entries.Add((new Entry(name, dtype, t.shape, offset, offset + bytes), t));
            offset += bytes;
        }

        var header = Header(entries.Select(e => e.Entry), metadata);
        var head = new byte[8 + header.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(head, (ulong)header.Length);
        header.CopyTo(head, 8);
        stream.Write(head);
        foreach (var (_, t) in entries)
        {
            using var scope = NewDisposeScope();
            // detach, cpu and contiguous return aliases when there is nothing to do, so a contiguous
            // CPU tensor is copied once, from its memory into the stream.
            var source = t.detach().cpu().contiguous();
            CopyBlocks(source, block => stream.Write(block));
        }
    }

    /// <summary>Reads the safetensors file at <paramref name="path"/>; its errors name the path.</summary>
    public static SafeTensorsContent Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        // Unbuffered: each tensor comes from the file into its memory in one read.
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
        try
        {
            return Read(file);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Reads a safetensors file from <paramref name="stream"/>, whose remaining bytes must be exactly
    /// that file. The tensors are new CPU tensors that own their memory; dispose the result to free them.
    /// </summary>
    public static SafeTensorsContent Read(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanRead)
            throw new ArgumentException("stream is not readable; expected a readable stream", nameof(stream));
        // With a length, a header that claims more than the file holds is refused before anything is allocated for it.
        long? length = stream.CanSeek ? stream.Length - stream.Position : null;

        Span<byte> prefix = stackalloc byte[8];
        var read = stream.ReadAtLeast(prefix, prefix.Length, throwOnEndOfStream: false);
        if (read < prefix.Length)
            throw new InvalidDataException($"file has {read} bytes; expected at least 8, the header size");
        var headerSize = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        // The limit first, so that a stream with a length and one without refuse a file alike.
        if (headerSize > MaxHeaderSize)
            throw new InvalidDataException($"header size {headerSize} exceeds the format's limit of {MaxHeaderSize} bytes");
        if (length is { } total && (long)headerSize > total - 8)
            throw HeaderPastEnd(headerSize, total - 8);
        var header = new byte[headerSize];
        read = stream.ReadAtLeast(header, header.Length, throwOnEndOfStream: false);
        if (read < header.Length)
            throw HeaderPastEnd(headerSize, read);

        var (entries, metadata) = ParseHeader(header);
        var dataLength = CheckLayout(entries);
        if (length is { } all)
        {
            var available = all - 8 - header.Length;
            if (dataLength > available)
                throw PastEnd(entries.First(e => e.End > available), available);
            if (dataLength < available)
                throw Trailing(available - dataLength, dataLength);
        }

        var tensors = new Dictionary<string, Tensor>(entries.Count, StringComparer.Ordinal);
        try
        {
            long position = 0;
            foreach (var e in entries)
            {
                var t = empty(e.Shape, e.DType.Type, CPU);
                tensors.Add(e.Name, t);
                CopyBlocks(t, block =>
                {
                    var got = stream.ReadAtLeast(block, block.Length, throwOnEndOfStream: false);
                    position += got;
                    if (got < block.Length) throw PastEnd(e, position);
                });
            }
            if (length is null && CountRest(stream) is var extra and > 0)
                throw Trailing(extra, dataLength);
        }
        catch
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw;
        }
        return new SafeTensorsContent(tensors, metadata);
    }

    private static byte[] Header(IEnumerable<Entry> entries, IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        // Relaxed escaping keeps non-ASCII names as UTF-8, as the reference writer (serde_json) does.
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(MetadataKey);
                foreach (var key in metadata.Keys.Order(StringComparer.Ordinal))
                    json.WriteString(key, metadata[key] ?? throw new ArgumentException($"metadata \"{key}\" is null; expected a string", nameof(metadata)));
                json.WriteEndObject();
            }
            foreach (var e in entries)
            {
                json.WriteStartObject(e.Name);
                json.WriteString("dtype", e.DType.Name);
                json.WriteStartArray("shape");
                foreach (var size in e.Shape) json.WriteNumberValue(size);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(e.Begin);
                json.WriteNumberValue(e.End);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        // Trailing spaces make the data section start 8-byte aligned, as the reference writer does.
        var header = new byte[(buffer.WrittenCount + 7) / 8 * 8];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(buffer.WrittenCount).Fill((byte)' ');
        if (header.Length > MaxHeaderSize)
            throw new ArgumentException($"header of {header.Length} bytes exceeds the format's limit of {MaxHeaderSize} bytes; write fewer tensors or less metadata per file");
        return header;
    }

    private static (List<Entry> Entries, Dictionary<string, string> Metadata) ParseHeader(byte[] header)
    {
        if (!Utf8.IsValid(header))
            throw new InvalidDataException("header is not valid UTF-8; expected UTF-8 JSON");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException(
                $"header is not valid JSON (line {e.LineNumber + 1}, byte offset {e.BytePositionInLine}); expected an object of tensor entries", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"header is a JSON {Kind(root)}; expected an object of tensor entries");
            var entries = new List<Entry>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            // JsonDocument keeps duplicate keys, and the format forbids them.
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in root.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                    throw new InvalidDataException($"header names \"{property.Name}\" twice; expected each name once");
                if (property.Name == MetadataKey)
                    ParseMetadata(property.Value, metadata);
                else
                    entries.Add(ParseEntry(property.Name, property.Value));
            }
            return (entries, metadata);
        }
    }

    private static void ParseMetadata(JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind == JsonValueKind.Null) return;
        if (value.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"\"{MetadataKey}\" is a JSON {Kind(value)}; expected an object of strings");
        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw new InvalidDataException($"\"{MetadataKey}\" has \"{item.Name}\" as a JSON {Kind(item.Value)}; expected a string");
            if (!metadata.TryAdd(item.Name, item.Value.GetString()!))
                throw new InvalidDataException($"\"{MetadataKey}\" names \"{item.Name}\" twice; expected each key once");
        }
    }

    private static Entry ParseEntry(string name, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"tensor \"{name}\" is a JSON {Kind(value)}; expected an object with dtype, shape and data_offsets");

        var dtypeValue = Field(name, value, "dtype");
        var dtype = dtypeValue.ValueKind == JsonValueKind.String
            ? Array.Find(DTypes, d => d.Name == dtypeValue.GetString())
            : default;
        if (dtype.Name is null)
            throw new InvalidDataException(
                $"tensor \"{name}\" has dtype {dtypeValue.GetRawText()}; expected one of {string.Join(", ", DTypes.Select(d => d.Name))}");

        var shapeValue = Field(name, value, "shape");
        if (!TryNaturals(shapeValue, out var shape))
            throw new InvalidDataException($"tensor \"{name}\" has shape {shapeValue.GetRawText()}; expected an array of sizes ≥ 0");

        var offsetsValue = Field(name, value, "data_offsets");
        if (!TryNaturals(offsetsValue, out var offsets) || offsets.Length != 2 || offsets[0] > offsets[1])
            throw new InvalidDataException($"tensor \"{name}\" has data_offsets {offsetsValue.GetRawText()}; expected [begin, end] with 0 ≤ begin ≤ end");
        var (begin, end) = (offsets[0], offsets[1]);

        long bytes;
        try
        {
            bytes = shape.Contains(0) ? 0 : checked(shape.Aggregate(1L, (n, size) => n * size) * dtype.Size);
        }
        catch (OverflowException)
        {
            throw new InvalidDataException($"tensor \"{name}\" has shape [{string.Join(", ", shape)}], more than {long.MaxValue} bytes of {dtype.Name}");
        }
        if (end - begin != bytes)
            throw new InvalidDataException(
                $"tensor \"{name}\" of shape [{string.Join(", ", shape)}] {dtype.Name} has {bytes} bytes; its data_offsets [{begin}, {end}] hold {end - begin}");
        return new Entry(name, dtype, shape, begin, end);
    }

    private static JsonElement Field(string name, JsonElement entry, string field) =>
        entry.TryGetProperty(field, out var value)
            ? value
            : throw new InvalidDataException($"tensor \"{name}\" has no \"{field}\"; expected dtype, shape and data_offsets");

    private static bool TryNaturals(JsonElement value, out long[] numbers)
    {
        numbers = [];
        if (value.ValueKind != JsonValueKind.Array) return false;
        var list = new List<long>();
        foreach (var item in value.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out var n) || n < 0) return false;
            list.Add(n);
        }
        numbers = [.. list];
        return true;
    }

    /// <summary>
    /// Sorts <paramref name="entries"/> by offset (the header may list them in any order) and checks
    /// that they tile the data section from byte 0; returns the data section's length.
    /// </summary>
    private static long CheckLayout(List<Entry> entries)
    {
        entries.Sort((a, b) => (a.Begin, a.End).CompareTo((b.Begin, b.End)) is var c and not 0 ? c : string.CompareOrdinal(a.Name, b.Name));
        long end = 0;
        Entry? previous = null;
        foreach (var e in entries)
        {
            if (e.Begin < end)
                throw new InvalidDataException(
                    $"tensors \"{previous!.Name}\" [{previous.Begin}, {previous.End}] and \"{e.Name}\" [{e.Begin}, {e.End}] overlap; expected each tensor to start where the one before it ends");
            if (e.Begin > end)
                throw new InvalidDataException($"data section has a gap at bytes [{end}, {e.Begin}) before tensor \"{e.Name}\"; expected tensors packed without gaps");
            end = e.End;
            previous = e;
        }
        return end;
    }

    // One memcpy per block between the tensor's memory and the stream; views of a contiguous tensor share its memory.
    private static void CopyBlocks(Tensor t, BlockAction action)
    {
        var bytes = t.NumberOfElements * t.ElementSize;
        if (bytes == 0) return;
        if (bytes <= int.MaxValue)
        {
            action(t.bytes);
            return;
        }
        using var flat = t.view(-1);
        var perBlock = BlockBytes / t.ElementSize;
        for (long start = 0; start < t.NumberOfElements; start += perBlock)
        {
            using var block = flat.narrow(0, start, Math.Min(perBlock, t.NumberOfElements - start));
            action(block.bytes);
        }
    }

    private static long CountRest(Stream stream)
    {
        var scratch = new byte[81920];
        long count = 0;
        int got;
        while ((got = stream.Read(scratch)) > 0) count += got;
        return count;
    }

    private static string Kind(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.True or JsonValueKind.False => "boolean",
        var kind => kind.ToString().ToLowerInvariant(),
    };

    private static InvalidDataException HeaderPastEnd(ulong headerSize, long rest) =>
        new($"header size {headerSize} is larger than the {rest} bytes that follow it; expected a complete safetensors file");

    private static InvalidDataException PastEnd(Entry e, long available) =>
        new($"tensor \"{e.Name}\" has data_offsets [{e.Begin}, {e.End}], past the end of the {available}-byte data section; expected a complete file");

    private static InvalidDataException Trailing(long extra, long dataLength) =>
        new($"data section has {extra} bytes after the last tensor, which ends at byte {dataLength}; expected the file to end there");
}
