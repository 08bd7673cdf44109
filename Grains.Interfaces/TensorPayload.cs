namespace MoeCluster;

/// <summary>
/// A dense tensor as it crosses a grain call: shape, element type and the raw little-endian bytes
/// in row-major order. One <c>byte[]</c> because Orleans copies it as one block, where a
/// <c>float[]</c> would be encoded element by element. Immutable so that calls within one silo
/// pass it by reference instead of deep-copying it.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record TensorPayload(
    [property: Id(0)] long[] Shape,
    [property: Id(1)] TensorDType DType,
    [property: Id(2)] byte[] Data)
{
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var s in Shape) n *= s;
            return n;
        }
    }

    public static int ElementSize(TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => 4,
        TensorDType.BF16 or TensorDType.F16 => 2,
        _ => throw new ArgumentException($"unknown wire dtype {(int)dtype}; expected F32, BF16 or F16", nameof(dtype)),
    };

    public override string ToString() => $"TensorPayload[{string.Join(", ", Shape)}] {DType} ({Data.Length} bytes)";
}
