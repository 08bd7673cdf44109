namespace MoeCluster;

/// <summary>
/// One weight of a layer as it is exported or imported in parts: its name (as the reference layer
/// names it: <c>gate</c>, <c>experts.{id}.w1</c>, …), shape and element type. Its bytes, row-major
/// and little-endian, travel in parts of a bounded size, so that a layer (or one expert) larger
/// than Orleans' message limit still moves.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record WeightInfo(
    [property: Id(0)] string Name,
    [property: Id(1)] long[] Shape,
    [property: Id(2)] TensorDType DType)
{
    public long ByteLength
    {
        get
        {
            long n = TensorPayload.ElementSize(DType);
            foreach (var s in Shape) n *= s;
            return n;
        }
    }

    public string Describe() => $"{Name} [{string.Join(", ", Shape)}] {DType}";
}

/// <summary>Every weight of a layer and the version (steps applied) they are at: what an export reads part by part.</summary>
[GenerateSerializer, Immutable]
public sealed record WeightManifest(
    [property: Id(0)] long Version,
    [property: Id(1)] WeightInfo[] Weights);
