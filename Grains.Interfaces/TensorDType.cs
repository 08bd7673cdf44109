namespace MoeCluster;

/// <summary>Element type of a tensor on the wire and of an expert's compute. Values are stable: they are serialized.</summary>
public enum TensorDType : byte
{
    F32 = 0,
    BF16 = 1,
    F16 = 2,
}
