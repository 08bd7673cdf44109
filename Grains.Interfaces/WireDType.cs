namespace MoeCluster;

/// <summary>Element type of a tensor on the wire. Values are stable: they are serialized.</summary>
public enum WireDType : byte
{
    F32 = 0,
    BF16 = 1,
    F16 = 2,
}
