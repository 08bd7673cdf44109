using MoeCluster.Grains.Numerics;

namespace MoeCluster.Grains.Checkpoints;

/// <summary>
/// The parts of one weight import that have arrived at a grain (the router for the gate, an expert
/// for its own weights), kept until the import is committed. Parts may come in any order and a part
/// sent again replaces itself, so a sender can retry; parts that overlap otherwise are refused.
/// </summary>
internal sealed class WeightImportBuffer(Guid id, string owner)
{
    private sealed class Weight(WeightInfo info)
    {
        public WeightInfo Info { get; } = info;
        public byte[] Data { get; } = GC.AllocateUninitializedArray<byte>(checked((int)info.ByteLength));
        // Offset → length of each part received.
        public SortedList<long, int> Parts { get; } = new();
        public long Received { get; set; }
    }

    private readonly Dictionary<string, Weight> weights = new();

    public Guid Id => id;

    /// <summary>When the last part arrived (or the buffer was made): an import left without parts is freed after a while.</summary>
    public DateTime LastWrite { get; private set; } = DateTime.UtcNow;

    /// <summary>Counts the import as alive now, as if a part had come.</summary>
    public void Touch() => LastWrite = DateTime.UtcNow;

    /// <summary>Bytes held for the weights that parts have arrived for.</summary>
    public long StagedBytes => weights.Values.Sum(w => (long)w.Data.Length);

    public void Write(WeightInfo info, long offset, byte[] data)
    {
        if (info.ByteLength > Array.MaxLength)
            throw new ArgumentException($"{info.Describe()} has {info.ByteLength} bytes; a weight holds at most {Array.MaxLength}");
        if (!weights.TryGetValue(info.Name, out var w))
            weights.Add(info.Name, w = new Weight(info));
        else if (!w.Info.Shape.SequenceEqual(info.Shape) || w.Info.DType != info.DType)
            throw new ArgumentException($"import {id} sent {info.Describe()}; its earlier parts were of {w.Info.Describe()}");
        if (offset < 0 || offset > info.ByteLength - data.Length)
            throw new ArgumentException($"import {id}: bytes {offset}..{offset + data.Length} of {info.Name} are out of range; it has {info.ByteLength} bytes");
        if (w.Parts.TryGetValue(offset, out var known))
        {
            if (known != data.Length)
                throw new ArgumentException($"import {id}: the part of {info.Name} at byte {offset} came before with {known} bytes, now with {data.Length}");
        }
        else
        {
            // The parts before and after this one in offset order are the only ones it could overlap.
            var next = FirstAtOrAfter(w.Parts.Keys, offset);
            if (next < w.Parts.Count && w.Parts.Keys[next] < offset + data.Length)
                throw new ArgumentException($"import {id}: bytes {offset}..{offset + data.Length} of {info.Name} overlap the part at byte {w.Parts.Keys[next]}");
            if (next > 0 && w.Parts.Keys[next - 1] + w.Parts.Values[next - 1] > offset)
                throw new ArgumentException($"import {id}: bytes {offset}..{offset + data.Length} of {info.Name} overlap the part at byte {w.Parts.Keys[next - 1]}");
            w.Parts.Add(offset, data.Length);
            w.Received += data.Length;
        }
        LastWrite = DateTime.UtcNow;
        data.CopyTo(w.Data, offset);
    }

    /// <summary>Throws unless every byte of each weight in <paramref name="names"/> has arrived.</summary>
    public void CheckComplete(IEnumerable<string> names)
    {
        foreach (var name in names) Whole(name);
    }

    /// <summary>
    /// Each weight of <paramref name="targets"/> (its name and the dtype of the parameter it
    /// replaces), whole, as a checkpoint record in that dtype under the name
    /// <paramref name="localName"/> gives; throws for one with bytes missing.
    /// </summary>
    public TensorRecord[] Complete(IEnumerable<(string Name, TensorDType DType)> targets, Func<string, string> localName) => targets.Select(target =>
    {
        var w = Whole(target.Name);
        var record = new TensorPayload(w.Info.Shape, w.Info.DType, w.Data);
        if (record.DType != target.DType)
        {
            using var value = TensorWire.FromPayload(record);
            record = TensorWire.ToPayload(value, target.DType);
        }
        return new TensorRecord { Name = localName(target.Name), DType = record.DType, Shape = record.Shape, Data = record.Data };
    }).ToArray();

    private Weight Whole(string name)
    {
        if (!weights.TryGetValue(name, out var w))
            throw new InvalidOperationException($"import {id}: {owner} has no part of {name}; send its parts, or begin the import again");
        if (w.Received != w.Info.ByteLength)
            throw new InvalidOperationException($"import {id}: {owner} holds {w.Received} of the {w.Info.ByteLength} bytes of {name}; send the missing parts, or begin the import again");
        return w;
    }

    private static int FirstAtOrAfter(IList<long> sorted, long offset)
    {
        int lo = 0, hi = sorted.Count;
        while (lo < hi)
        {
            var mid = (lo + hi) / 2;
            if (sorted[mid] < offset) lo = mid + 1; else hi = mid;
        }
        return lo;
    }
}
