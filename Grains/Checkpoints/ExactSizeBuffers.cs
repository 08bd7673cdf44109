using System.Buffers;

namespace MoeCluster.Grains.Checkpoints;

/// <summary>
/// Encodes into one array of exactly the encoded length: a first pass only counts the bytes
/// (through one small scratch buffer), the second writes them into an array of that length.
/// A checkpoint of a d 512 / d_ff 2048 expert is 24 MiB; encoding it into growing buffers and
/// trimming left two to three times that as garbage per expert, which the silo's GC kept
/// committed long after (layer creation: 856 MiB allocated for 8 experts, the silo's peak
/// memory 1.3–1.6× the reference process's). Counting costs one extra pass over the bytes, into
/// a sink that every count shares, since nothing reads what is written there.
/// </summary>
internal static class ExactSizeBuffers
{
    private const int ScratchBytes = 64 * 1024;

    /// <summary>The bytes <paramref name="write"/> produces, in an array of exactly their length.</summary>
    public static byte[] Write(Action<IBufferWriter<byte>> write)
    {
        var counter = new CountingBufferWriter();
        write(counter);
        var exact = new FixedBufferWriter(checked((int)counter.Count));
        write(exact);
        return exact.Result();
    }

    /// <summary>The bytes <paramref name="write"/> writes to a stream, in an array of exactly their length.</summary>
    public static byte[] WriteStream(Action<Stream> write)
    {
        var counter = new CountingStream();
        write(counter);
        var length = checked((int)counter.Count);
        var exact = new FixedBufferWriter(length);
        exact.WriteStream(length, write);
        return exact.Result();
    }

    /// <summary>Counts what is written; every span it hands out is the shared <see cref="CountingSink"/>.</summary>
    internal sealed class CountingBufferWriter : IBufferWriter<byte>
    {
        public long Count { get; private set; }

        public void Advance(int count) => Count += count;

        public Memory<byte> GetMemory(int sizeHint = 0) => CountingSink.Get(sizeHint);

        public Span<byte> GetSpan(int sizeHint = 0) => CountingSink.Get(sizeHint).Span;
    }

    /// <summary>
    /// Where counting passes write. MessagePack asks for a span of a whole byte array's length
    /// before it copies the array in (16 MiB for the optimizer state of a d 512 / d_ff 2048 expert),
    /// and a scratch buffer of each count's own made that much garbage per checkpoint (20 MiB per
    /// standard expert and step, with a checkpoint at every step, before this sink). The bytes
    /// written here are never read, so every count, on any thread, shares one sink, which grows to
    /// the largest request up to <see cref="SharedSinkMaxBytes"/>; a larger one gets its own.
    /// </summary>
    internal static class CountingSink
    {
        public const int SharedSinkMaxBytes = 64 << 20;
        private static byte[] shared = new byte[ScratchBytes];

        public static Memory<byte> Get(int sizeHint)
        {
            var sink = Volatile.Read(ref shared);
            if (sizeHint <= sink.Length) return sink;
            if (sizeHint > SharedSinkMaxBytes) return new byte[sizeHint];
            var grown = new byte[Math.Max(sizeHint, (int)Math.Min(2L * sink.Length, SharedSinkMaxBytes))];
            // A count that raced to grow it too keeps whichever sink it got: any sink of the size will do.
            Interlocked.CompareExchange(ref shared, grown, sink);
            return grown;
        }

        /// <summary>The shared sink's length now (for tests).</summary>
        public static int Length => Volatile.Read(ref shared).Length;
    }

    /// <summary>
    /// Writes into one array of the counted length. A writer may ask for more room than it then
    /// uses (MessagePack asks for 9 bytes to write a small integer in 1); near the end of the array
    /// such a request gets a scratch span, whose used part is copied in on <see cref="Advance"/>.
    /// </summary>
    internal sealed class FixedBufferWriter(int length) : IBufferWriter<byte>
    {
        private readonly byte[] array = length == 0 ? [] : GC.AllocateUninitializedArray<byte>(length);
        private byte[]? scratch;
        private bool scratchHandedOut;
        private int position;

        public void Advance(int count)
        {
            if (count < 0 || position + count > array.Length)
                throw new InvalidOperationException($"the second pass wrote past the {array.Length} bytes the first counted; the encoding must be deterministic");
            if (scratchHandedOut) scratch.AsSpan(0, count).CopyTo(array.AsSpan(position));
            scratchHandedOut = false;
            position += count;
        }

        public Memory<byte> GetMemory(int sizeHint = 0)
        {
            if (array.Length - position >= Math.Max(sizeHint, 1)) return array.AsMemory(position);
            if (scratch is null || scratch.Length < Math.Max(sizeHint, 16)) scratch = new byte[Math.Max(sizeHint, 16)];
            scratchHandedOut = true;
            return scratch;
        }

        public Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

        /// <summary>Lets <paramref name="write"/> stream up to <paramref name="count"/> bytes into the array here; returns how many it wrote.</summary>
        public int WriteStream(int count, Action<Stream> write)
        {
            if (scratchHandedOut || count < 0 || position + count > array.Length)
                throw new InvalidOperationException($"a stream of {count} bytes does not fit at {position} of the {array.Length} bytes the first pass counted; the encoding must be deterministic");
            using var stream = new MemoryStream(array, position, count, writable: true);
            try
            {
                write(stream);
            }
            catch (NotSupportedException e) // a MemoryStream over a fixed array refuses to grow
            {
                throw new InvalidOperationException($"the second pass wrote past the {count} bytes the first counted; the encoding must be deterministic", e);
            }
            var written = checked((int)stream.Position);
            position += written;
            return written;
        }

        public byte[] Result() => position == array.Length ? array
            : throw new InvalidOperationException($"the second pass wrote {position} bytes where the first counted {array.Length}; the encoding must be deterministic");
    }

    internal sealed class CountingStream : Stream
    {
        public long Count { get; private set; }
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => Count;
        public override long Position { get => Count; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Count += count;
        public override void Write(ReadOnlySpan<byte> buffer) => Count += buffer.Length;
    }
}
