using TorchSharp;

namespace MoeCluster.Grains.Numerics;

/// <summary>
/// Numbers that TorchSharp operations take as a <see cref="Scalar"/>, made once and held for the
/// process's life. A number passed straight to an operation becomes a Scalar that only its
/// finalizer frees, and nothing keeps it alive during the native call: a garbage collection on
/// another thread can free it before libtorch reads it (a 2000-step LM run failed so, with
/// "Expected false to be true" from c10 Scalar::toFloat). Numbers that vary per call are made
/// with <c>using var s = value.ToScalar()</c> instead, which keeps them alive to the end of the scope.
/// </summary>
public static class HeldScalars
{
    /// <summary>The alpha of index_add_ when the source is added as it is.</summary>
    public static readonly Scalar One = 1.ToScalar();

    /// <summary>What masked positions are filled with before a softmax.</summary>
    public static readonly Scalar NegativeInfinity = float.NegativeInfinity.ToScalar();
}
