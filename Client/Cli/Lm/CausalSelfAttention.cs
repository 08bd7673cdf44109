using MoeCluster.Grains.Numerics;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MoeCluster.Cli.Lm;

/// <summary>Multi-head self-attention in which a position sees only itself and those before it.</summary>
public sealed class CausalSelfAttention : Module<Tensor, Tensor>
{
    private readonly Linear qkv;
    private readonly Linear proj;
    private readonly int heads;
    // Held for the module's life, not passed as a number (see HeldScalars).
    private readonly Scalar headScale;

    public CausalSelfAttention(int dModel, int heads) : base(nameof(CausalSelfAttention))
    {
        this.heads = heads;
        headScale = Math.Sqrt(dModel / heads).ToScalar();
        qkv = Linear(dModel, 3 * dModel);
        proj = Linear(dModel, dModel);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        long b = x.shape[0], t = x.shape[1], d = x.shape[2], hd = d / heads;
        var parts = qkv.forward(x).view(b, t, 3, heads, hd).permute(2, 0, 3, 1, 4); // [3, B, H, T, hd]
        var (q, k, v) = (parts[0], parts[1], parts[2]);
        var scores = q.matmul(k.transpose(-2, -1)).div(headScale);
        var future = ones(t, t, ScalarType.Bool, x.device).triu(1);
        var weights = functional.softmax(scores.masked_fill(future, HeldScalars.NegativeInfinity), -1);
        var mixed = weights.matmul(v).transpose(1, 2).reshape(b, t, d);
        return proj.forward(mixed);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) headScale.Dispose();
        base.Dispose(disposing);
    }
}
