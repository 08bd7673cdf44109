using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MoeCluster.Grains.Numerics;

/// <summary>
/// One expert's feed-forward network. Parameters follow torch's Linear layout ([out, in]) and
/// live in the compute dtype on the expert's device; inputs are cast to that dtype.
/// </summary>
public abstract class ExpertFfn : Module<Tensor, Tensor>
{
    protected ExpertFfn(string name, int hiddenSize, ScalarType dtype, Device? device) : base(name)
    {
        HiddenSize = hiddenSize;
        DType = dtype;
        Device = device ?? CPU;
    }

    /// <summary>d_ff: the width of the hidden activation that expert dropout masks.</summary>
    public int HiddenSize { get; }
    public ScalarType DType { get; }
    public Device Device { get; }

    public override Tensor forward(Tensor u) => Forward(u, null);

    /// <summary>
    /// FFN(u) with the hidden activation multiplied by <paramref name="hiddenMask"/> ([rows, d_ff],
    /// see <see cref="ExpertDropout"/>) before W2; no mask is the plain FFN.
    /// </summary>
    public abstract Tensor Forward(Tensor u, Tensor? hiddenMask);

    /// <summary>
    /// Builds the expert that <paramref name="config"/> describes, its weights drawn from
    /// <paramref name="seed"/> alone: the same seed gives the same weights on any device and,
    /// up to rounding, in any compute dtype.
    /// </summary>
    public static ExpertFfn Create(MoeLayerConfig config, long seed, Device? device = null) => config.Activation switch
    {
        ExpertActivation.Gelu => new GeluExpertFfn(config.DModel, config.DFF, config.ComputeDType, seed, device),
        ExpertActivation.SwiGlu => new SwiGluExpertFfn(config.DModel, config.DFF, config.ComputeDType, seed, device),
        _ => throw new ArgumentException($"activation {config.Activation} is not supported; expected Gelu or SwiGlu"),
    };

    /// <summary>Rows up to which an expert computes its products as <see cref="WeightsFirst"/>.</summary>
    public const int WeightsFirstMaxRows = 64;

    /// <summary>
    /// A few rows, as in a small batch or with many experts: the products are computed weights-first.
    /// Above that torch's Linear is kept: in a training step of the standard layer (about 1,000
    /// rows per expert) weights-first was 5–15% slower over 4 alternating runs, though the
    /// profile's forward alone timed about even at 1,024 rows.
    /// </summary>
    protected static bool FewRows(Tensor u) => u.shape[0] <= WeightsFirstMaxRows;

    /// <summary>
    /// W·uᵀ (+ b as a column): a Linear layer's product computed transposed, [out, rows] from the
    /// weights [out, in] and the rows as columns [in, rows]. The same arithmetic as torch's
    /// Linear (u·Wᵀ), but libtorch's BLAS on this project's CPUs runs it 1.3–1.5× faster for an
    /// expert's 4–64 rows with weights that are not in cache, as after another expert ran
    /// (<c>./moe bench --profile-small-batch</c> times both layouts).
    /// </summary>
    protected static Tensor WeightsFirst(Tensor weight, Tensor columns, Tensor? bias = null) =>
        bias is null ? weight.matmul(columns) : addmm(bias.unsqueeze(1), weight, columns, beta: 1, alpha: 1);

    /// <summary>
    /// U(−1/√fan_in, 1/√fan_in), as torch's Linear, drawn in Float32 on the CPU so the values do
    /// not depend on the target device or dtype.
    /// </summary>
    protected static Parameter Uniform(Generator generator, long[] shape, long fanIn, ScalarType dtype, Device? device)
    {
        using var scope = NewDisposeScope();
        var bound = 1.0 / Math.Sqrt(fanIn);
        var values = rand(shape, ScalarType.Float32, generator: generator).mul_(2 * bound).sub_(bound);
        var data = values.to(dtype, device ?? CPU).contiguous();
        return new Parameter(data.DetachFromDisposeScope());
    }
}

/// <summary><c>W2 · gelu(W1 u + b1) + b2</c> with exact (erf) GELU.</summary>
public sealed class GeluExpertFfn : ExpertFfn
{
    private readonly Parameter w1, b1, w2, b2;

    public GeluExpertFfn(int dModel, int dFF, ScalarType dtype, long seed, Device? device = null)
        : base(nameof(GeluExpertFfn), dFF, dtype, device)
    {
        using var generator = new Generator((ulong)seed);
        w1 = Uniform(generator, [dFF, dModel], dModel, dtype, device);
        b1 = Uniform(generator, [dFF], dModel, dtype, device);
        w2 = Uniform(generator, [dModel, dFF], dFF, dtype, device);
        b2 = Uniform(generator, [dModel], dFF, dtype, device);
        RegisterComponents();
    }

    public override Tensor Forward(Tensor u, Tensor? hiddenMask)
    {
        using var scope = NewDisposeScope();
        if (!FewRows(u))
        {
            var h = functional.gelu(functional.linear(u, w1, b1));
            if (hiddenMask is not null) h = h.mul(hiddenMask);
            return functional.linear(h, w2, b2).MoveToOuterDisposeScope();
        }
        var hT = functional.gelu(WeightsFirst(w1, u.t(), b1));                  // [d_ff, rows]
        if (hiddenMask is not null) hT = hT.mul(hiddenMask.t());
        return WeightsFirst(w2, hT, b2).t().MoveToOuterDisposeScope();          // [rows, d_model], a transposed view
    }
}

/// <summary><c>W2 · (silu(W1 u) ⊙ (W3 u))</c>, no biases.</summary>
public sealed class SwiGluExpertFfn : ExpertFfn
{
    private readonly Parameter w1, w2, w3;

    public SwiGluExpertFfn(int dModel, int dFF, ScalarType dtype, long seed, Device? device = null)
        : base(nameof(SwiGluExpertFfn), dFF, dtype, device)
    {
        using var generator = new Generator((ulong)seed);
        w1 = Uniform(generator, [dFF, dModel], dModel, dtype, device);
        w2 = Uniform(generator, [dModel, dFF], dFF, dtype, device);
        w3 = Uniform(generator, [dFF, dModel], dModel, dtype, device);
        RegisterComponents();
    }

    public override Tensor Forward(Tensor u, Tensor? hiddenMask)
    {
        using var scope = NewDisposeScope();
        if (!FewRows(u))
        {
            var h = functional.silu(functional.linear(u, w1)).mul(functional.linear(u, w3));
            if (hiddenMask is not null) h = h.mul(hiddenMask);
            return functional.linear(h, w2).MoveToOuterDisposeScope();
        }
        var uT = u.t();
        var hT = functional.silu(WeightsFirst(w1, uT)).mul(WeightsFirst(w3, uT)); // [d_ff, rows]
        if (hiddenMask is not null) hT = hT.mul(hiddenMask.t());
        return WeightsFirst(w2, hT).t().MoveToOuterDisposeScope();              // [rows, d_model], a transposed view
    }
}
