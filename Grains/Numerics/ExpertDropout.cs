using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Numerics;

/// <summary>
/// The dropout inside the experts (on the hidden activation, after φ and before W2), separate
/// from any dropout of the rest of the model: the Switch fine-tuning recipe drops 0.4 in the
/// experts and 0.1 elsewhere. The mask is drawn from a seed alone, on the CPU in Float32, so
/// that whoever draws it again — the expert recomputing its forward in backward, a replay after
/// failover, the reference layer — gets the same mask on any device.
/// </summary>
public static class ExpertDropout
{
    /// <summary>
    /// The [rows, hidden] mask for rate <paramref name="p"/>: each element is 0 with probability
    /// p, else 1/(1−p) (inverted dropout, so the expected activation is unchanged and inference
    /// needs no rescaling).
    /// </summary>
    public static Tensor Mask(long rows, long hidden, double p, long seed, ScalarType dtype, Device device)
    {
        if (!(p > 0 && p < 1)) throw new ArgumentException($"expert dropout rate is {p}; a mask needs 0 < p < 1");
        using var scope = NewDisposeScope();
        using var generator = new Generator((ulong)seed);
        using var threshold = p.ToScalar(); // held: see HeldScalars
        using var keptScale = (1.0 / (1.0 - p)).ToScalar();
        var kept = rand([rows, hidden], ScalarType.Float32, generator: generator).ge_(threshold);
        return kept.mul_(keptScale).to(dtype, device).MoveToOuterDisposeScope();
    }
}
