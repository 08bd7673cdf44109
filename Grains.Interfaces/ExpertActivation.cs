namespace MoeCluster;

/// <summary>The feed-forward form of every expert of a layer. Values are stable: they are serialized.</summary>
public enum ExpertActivation
{
    /// <summary><c>W2 · gelu(W1 u + b1) + b2</c>, exact (erf) GELU.</summary>
    Gelu = 0,
    /// <summary><c>W2 · (silu(W1 u) ⊙ (W3 u))</c>, no biases.</summary>
    SwiGlu = 1,
}
