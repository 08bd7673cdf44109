using System.Buffers.Binary;
using System.Text;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Client.Tests;

/// <summary>
/// The safetensors reader and writer against bytes built by hand and against the reference
/// implementation's own test vectors, so that what PyTorch's <c>load_file</c> reads is pinned down
/// without Python.
/// </summary>
public class SafeTensorsTests
{
    [Fact]
    public void Round_trip_of_every_dtype_and_shape_is_bit_exact_and_keeps_metadata()
    {
        var generator = new Generator(7);
        using var scope = NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>
        {
            ["f32"] = randn([2, 3], generator: generator),
            ["f64"] = randn([3], ScalarType.Float64, generator: generator),
            ["f16"] = randn([4, 2], generator: generator).to(ScalarType.Float16),
            ["bf16"] = randn([5], generator: generator).to(ScalarType.BFloat16),
            ["i64.scalar"] = tensor(-1234567890123L),
            ["i32.empty"] = zeros([0, 4], ScalarType.Int32),
            ["i16"] = tensor(new short[] { -3, 30000 }),
            ["i8"] = tensor(new sbyte[] { -128, 0, 127 }),
            ["u8"] = tensor(new byte[] { 0, 1, 200, 255, 7, 8, 9 }),
            ["bool"] = tensor(new[] { true, false, false, true }).reshape(2, 2),
            ["c64"] = randn([2], ScalarType.ComplexFloat32, generator: generator),
        };
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode ✓ \"quoted\"\n" };

        using var content = SafeTensorsFile.Read(new MemoryStream(WriteBytes(tensors, metadata)));

        Assert.Equal(tensors.Keys.Order(), content.Tensors.Keys.Order());
        foreach (var (name, expected) in tensors)
        {
            var actual = content.Tensors[name];
            Assert.Equal(expected.dtype, actual.dtype);
            Assert.Equal(expected.shape, actual.shape);
            Assert.Equal(DeviceType.CPU, actual.device_type);
            Assert.Equal(Bytes(expected), Bytes(actual));
        }
        Assert.Empty(content.Tensors["i64.scalar"].shape);
        Assert.Equal(metadata, content.Metadata);
    }

    [Fact]
    public void Bf16_round_trip_keeps_the_bits()
    {
        // Zero, minus zero, one, ±infinity, a NaN with a payload, the smallest subnormal, the largest finite, -123.5.
        ushort[] bits = [0x0000, 0x8000, 0x3F80, 0x7F80, 0xFF80, 0x7FC1, 0x0001, 0x7F7F, 0xC2F7];
        var raw = new byte[bits.Length * 2];
        for (var i = 0; i < bits.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(raw.AsSpan(2 * i), bits[i]);
        using var t = empty([bits.Length], ScalarType.BFloat16);
        t.bytes = raw;

        var file = WriteBytes(new Dictionary<string, Tensor> { ["w"] = t });
        using var content = SafeTensorsFile.Read(new MemoryStream(file));

        Assert.Equal(raw, file[^raw.Length..]);
        Assert.Equal(ScalarType.BFloat16, content.Tensors["w"].dtype);
        Assert.Equal(raw, Bytes(content.Tensors["w"]));
    }

    [Fact]
    public void Write_produces_the_hand_made_golden_file_and_Read_reads_it()
    {
        // {"a": F32 [2] = [1.0, 2.0]}: a 54-byte header and 2 spaces, so that the data starts at byte 64.
        var golden = Concat(
            [56, 0, 0, 0, 0, 0, 0, 0],
            Encoding.UTF8.GetBytes("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  """),
            [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x40]);
        using var a = tensor(new[] { 1.0f, 2.0f });

        Assert.Equal(golden, WriteBytes(new Dictionary<string, Tensor> { ["a"] = a }));

        using var content = SafeTensorsFile.Read(new MemoryStream(golden));
        Assert.Equal([2L], content.Tensors["a"].shape);
        Assert.Equal([1.0f, 2.0f], content.Tensors["a"].data<float>().ToArray());
        Assert.Empty(content.Metadata);
    }

    [Fact]
    public void Golden_file_with_metadata_has_metadata_first_then_tensors_by_name()
    {
        var golden = Concat(
            [144, 0, 0, 0, 0, 0, 0, 0],
            Encoding.UTF8.GetBytes(
                """{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]}}      """),
            [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x40],
            [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        using var a = tensor(new[] { 1.0f, 2.0f });
        using var b = tensor(-2L);

        Assert.Equal(golden, WriteBytes(new Dictionary<string, Tensor> { ["b"] = b, ["a"] = a }, new Dictionary<string, string> { ["format"] = "pt" }));

        using var content = SafeTensorsFile.Read(new MemoryStream(golden));
        Assert.Equal(-2L, content.Tensors["b"].item<long>());
        Assert.Equal("pt", content.Metadata["format"]);
    }

    [Fact]
    public void Write_matches_the_reference_implementations_own_test_vectors()
    {
        // safetensors/src/tensor.rs, test_serialization: "attn.0" F32 [1, 2, 3] = 0..5, a 64-byte header needing no padding.
        byte[] attn =
        [
            64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
            116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
            58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
            101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
            0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
        ];
        using var values = arange(6, ScalarType.Float32).reshape(1, 2, 3);
        Assert.Equal(attn, WriteBytes(new Dictionary<string, Tensor> { ["attn.0"] = values }));

        // test_empty: no tensors, then no tensors and {"framework": "pt"}.
        Assert.Equal([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32], WriteBytes([]));
        byte[] metadataOnly =
        [
            40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95,
            95, 34, 58, 123, 34, 102, 114, 97, 109, 101, 119, 111, 114, 107, 34, 58, 34, 112,
            116, 34, 125, 125, 32, 32, 32, 32, 32,
        ];
        Assert.Equal(metadataOnly, WriteBytes([], new Dictionary<string, string> { ["framework"] = "pt" }));
    }

    [Fact]
    public void Read_takes_headers_in_any_order_and_spacing_and_unpadded()
    {
        // As Python's json.dumps spaces it, fields and tensors out of order, metadata in the middle, 148 bytes (no padding).
        var header = """{"b": {"shape": [2], "dtype": "U8", "data_offsets": [0, 2]}, "__metadata__": {"k": "v"}, "a": {"data_offsets": [2, 6], "dtype": "I32", "shape": []}}""";
        var file = Concat(Prefix(Encoding.UTF8.GetByteCount(header)), Encoding.UTF8.GetBytes(header), [9, 10, 0x2A, 0, 0, 0]);

        foreach (var stream in Streams(file))
        {
            using var content = SafeTensorsFile.Read(stream);
            Assert.Equal([(byte)9, (byte)10], content.Tensors["b"].data<byte>().ToArray());
            Assert.Equal(42, content.Tensors["a"].item<int>());
            Assert.Equal(["b", "a"], content.Tensors.Keys);
            Assert.Equal("v", content.Metadata["k"]);
        }

        // safetensors/src/tensor.rs, test_empty_shapes_allowed: an I32 scalar.
        var scalar = "8\0\0\0\0\0\0\0{\"test\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}\0\0\0\0"u8.ToArray();
        using (var content = SafeTensorsFile.Read(new MemoryStream(scalar)))
            Assert.Equal(0, content.Tensors["test"].item<int>());
    }

    [Fact]
    public void Same_tensors_give_the_same_bytes_whatever_the_insertion_order()
    {
        using var scope = NewDisposeScope();
        var x = randn([3, 4], generator: new Generator(1));
        var y = arange(5, ScalarType.Int64);
        var z = ones([2], ScalarType.BFloat16);

        var first = WriteBytes(
            new Dictionary<string, Tensor> { ["x"] = x, ["y"] = y, ["layers.10.w"] = z, ["layers.2.w"] = x },
            new Dictionary<string, string> { ["a"] = "1", ["b"] = "2" });
        var again = WriteBytes(
            new Dictionary<string, Tensor> { ["x"] = x, ["y"] = y, ["layers.10.w"] = z, ["layers.2.w"] = x },
            new Dictionary<string, string> { ["a"] = "1", ["b"] = "2" });
        var reordered = WriteBytes(
            new Dictionary<string, Tensor> { ["layers.2.w"] = x, ["y"] = y, ["x"] = x, ["layers.10.w"] = z },
            new Dictionary<string, string> { ["b"] = "2", ["a"] = "1" });

        Assert.Equal(first, again);
        Assert.Equal(first, reordered);
    }

    [Fact]
    public void Write_stores_views_and_tensors_that_need_grad_row_major()
    {
        using var scope = NewDisposeScope();
        var transposed = arange(6, ScalarType.Int64).reshape(2, 3).t();
        var trained = ones([2], requires_grad: true);

        using var content = SafeTensorsFile.Read(new MemoryStream(WriteBytes(new Dictionary<string, Tensor> { ["t"] = transposed, ["p"] = trained })));

        Assert.Equal([3L, 2L], content.Tensors["t"].shape);
        Assert.Equal([0L, 3L, 1L, 4L, 2L, 5L], content.Tensors["t"].data<long>().ToArray());
        Assert.Equal([1.0f, 1.0f], content.Tensors["p"].data<float>().ToArray());
        Assert.False(content.Tensors["p"].requires_grad);
    }

    public static TheoryData<string, int, string> MalformedHeaders => new()
    {
        { """{"a":{"dtype":F32}}""", 0, "header is not valid JSON (line 1, byte offset 14); expected an object of tensor entries" },
        { """{"a":{"dtype":"F32",""", 0, "header is not valid JSON (line 1, byte offset 19); expected an object of tensor entries" },
        { "[1]", 0, "header is a JSON array; expected an object of tensor entries" },
        { """{"a":3}""", 0, "tensor \"a\" is a JSON number; expected an object with dtype, shape and data_offsets" },
        { """{"a":{"dtype":"F32","shape":[1]}}""", 4, "tensor \"a\" has no \"data_offsets\"; expected dtype, shape and data_offsets" },
        {
            """{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}""", 1,
            "tensor \"a\" has dtype \"Q4\"; expected one of BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64, C64"
        },
        { """{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}""", 0, "tensor \"a\" has shape [-1]; expected an array of sizes ≥ 0" },
        {
            """{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}""", 4,
            "tensor \"a\" has data_offsets [4,0]; expected [begin, end] with 0 ≤ begin ≤ end"
        },
        {
            """{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}""", 20,
            "tensor \"a\" of shape [2, 3] F32 has 24 bytes; its data_offsets [0, 20] hold 20"
        },
        {
            """{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 12,
            "tensor \"a\" has data_offsets [0, 16], past the end of the 12-byte data section; expected a complete file"
        },
        {
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12,
            "tensors \"a\" [0, 8] and \"b\" [4, 12] overlap; expected each tensor to start where the one before it ends"
        },
        {
            """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 12,
            "data section has a gap at bytes [4, 8) before tensor \"b\"; expected tensors packed without gaps"
        },
        {
            """{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8,
            "data section has a gap at bytes [0, 4) before tensor \"a\"; expected tensors packed without gaps"
        },
        {
            """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 6,
            "data section has 2 bytes after the last tensor, which ends at byte 4; expected the file to end there"
        },
        {
            """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8,
            "header names \"a\" twice; expected each name once"
        },
        { """{"__metadata__":[]}""", 0, "\"__metadata__\" is a JSON array; expected an object of strings" },
        { """{"__metadata__":{"epoch":3}}""", 0, "\"__metadata__\" has \"epoch\" as a JSON number; expected a string" },
    };

    [Theory]
    [MemberData(nameof(MalformedHeaders))]
    public void Read_refuses_a_malformed_file_with_a_message_naming_the_fault(string header, int dataLength, string message)
    {
        var file = Concat(Prefix(Encoding.UTF8.GetByteCount(header)), Encoding.UTF8.GetBytes(header), new byte[dataLength]);
        foreach (var stream in Streams(file))
            Assert.Equal(message, Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Read(stream)).Message);
    }

    [Fact]
    public void Read_refuses_a_header_size_larger_than_the_file_and_a_broken_prefix()
    {
        var file = Concat(Prefix(1000), new byte[10]);
        foreach (var stream in Streams(file))
            Assert.Equal("header size 1000 is larger than the 10 bytes that follow it; expected a complete safetensors file",
                Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Read(stream)).Message);

        var huge = Concat([0, 0, 0, 0, 0, 0, 0, 0x80], new byte[10]);
        foreach (var stream in Streams(huge))
            Assert.Equal("header size 9223372036854775808 exceeds the format's limit of 100000000 bytes",
                Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Read(stream)).Message);

        foreach (var stream in Streams([8, 0, 0, 0, 0]))
            Assert.Equal("file has 5 bytes; expected at least 8, the header size",
                Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Read(stream)).Message);

        var latin1 = Concat(Prefix(8), [0x7B, 0x22, 0xE9, 0x22, 0x3A, 0x31, 0x7D, 0x20]);
        Assert.Equal("header is not valid UTF-8; expected UTF-8 JSON",
            Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Read(new MemoryStream(latin1))).Message);
    }

    [Fact]
    public void Write_refuses_reserved_or_empty_names_and_dtypes_the_format_cannot_hold()
    {
        using var scope = NewDisposeScope();
        var x = ones([2]);
        var refusals = new (Dictionary<string, Tensor> Tensors, Dictionary<string, string>? Metadata, string Message)[]
        {
            (new() { [""] = x }, null, "a tensor has an empty name; expected a non-empty name (Parameter 'tensors')"),
            (new() { ["__metadata__"] = x }, null,
                "a tensor is named \"__metadata__\", which the format keeps for metadata; expected another name (Parameter 'tensors')"),
            (new() { ["x"] = x, ["z"] = ones([2], ScalarType.ComplexFloat64) }, null,
                "tensor \"z\" has dtype ComplexFloat64; expected one of Bool, Byte, Int8, Int16, Int32, Int64, Float16, BFloat16, Float32, Float64, ComplexFloat32 (Parameter 'tensors')"),
            (new() { ["x"] = x }, new() { ["k"] = null! }, "metadata \"k\" is null; expected a string (Parameter 'metadata')"),
        };
        foreach (var (tensors, metadata, message) in refusals)
        {
            using var stream = new MemoryStream();
            Assert.Equal(message, Assert.Throws<ArgumentException>(() => SafeTensorsFile.Write(stream, tensors, metadata)).Message);
            Assert.Equal(0, stream.Length);
        }
    }

    [Fact]
    public void Path_overloads_replace_the_file_leave_no_temporary_and_name_the_path_in_errors()
    {
        var directory = Directory.CreateTempSubdirectory("safetensors-test-");
        try
        {
            var path = Path.Combine(directory.FullName, "model.safetensors");
            using var a = tensor(new[] { 1.0f, 2.0f });
            File.WriteAllText(path, "an older, longer file that the write replaces whole");
            SafeTensorsFile.Write(path, new Dictionary<string, Tensor> { ["a"] = a });

            Assert.Equal(WriteBytes(new Dictionary<string, Tensor> { ["a"] = a }), File.ReadAllBytes(path));
            Assert.Equal([path], Directory.GetFiles(directory.FullName));
            using (var content = SafeTensorsFile.Read(path))
                Assert.Equal([1.0f, 2.0f], content.Tensors["a"].data<float>().ToArray());

            Assert.Throws<ArgumentException>(() => SafeTensorsFile.Write(path, new Dictionary<string, Tensor> { [""] = a }));
            Assert.Equal([path], Directory.GetFiles(directory.FullName));

            File.WriteAllBytes(path, [1, 2, 3]);
            Assert.Equal($"{path}: file has 3 bytes; expected at least 8, the header size",
                Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Read(path)).Message);
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    [Fact]
    public void Disposing_the_content_disposes_the_tensors_left_in_it()
    {
        using var a = tensor(new[] { 1.0f });
        using var b = tensor(new[] { 2.0f });
        var content = SafeTensorsFile.Read(new MemoryStream(WriteBytes(new Dictionary<string, Tensor> { ["a"] = a, ["b"] = b })));
        using var kept = content.Tensors["b"];
        content.Tensors.Remove("b");
        var dropped = content.Tensors["a"];

        content.Dispose();

        Assert.True(dropped.IsInvalid);
        Assert.Equal(2.0f, kept.item<float>());
    }

    private static byte[] WriteBytes(Dictionary<string, Tensor> tensors, Dictionary<string, string>? metadata = null)
    {
        using var stream = new MemoryStream();
        SafeTensorsFile.Write(stream, tensors, metadata);
        return stream.ToArray();
    }

    private static byte[] Bytes(Tensor t) => t.NumberOfElements == 0 ? [] : t.contiguous().bytes.ToArray();

    private static byte[] Prefix(long headerSize)
    {
        var prefix = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(prefix, headerSize);
        return prefix;
    }

    private static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    /// <summary>The same bytes as a seekable stream and as one that is not and returns short reads.</summary>
    private static IEnumerable<Stream> Streams(byte[] file) => [new MemoryStream(file), new TrickleStream(file)];

    private sealed class TrickleStream(byte[] data) : Stream
    {
        private int position;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            var n = Math.Min(Math.Min(buffer.Length, 3), data.Length - position);
            data.AsSpan(position, n).CopyTo(buffer);
            position += n;
            return n;
        }

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
