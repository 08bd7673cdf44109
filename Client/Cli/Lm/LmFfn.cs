using MoeCluster.Client;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MoeCluster.Cli.Lm;

/// <summary>A block's feed-forward part on [tokens, d_model]; MoE kinds also give their aux loss.</summary>
public abstract class LmFfn(string name) : Module<Tensor, Tensor>(name)
{
    /// <summary>The last training forward's α·L_aux + β·L_z, in the graph; null for a dense FFN or in eval.</summary>
    public abstract Tensor? AuxLoss { get; }
}

/// <summary>The dense baseline: d → d_ff → d with exact GELU, the FLOPs of one top-1 expert.</summary>
public sealed class DenseFfn : LmFfn
{
    private readonly Linear fc1;
    private readonly Linear fc2;

    public DenseFfn(int dModel, int dff) : base(nameof(DenseFfn))
    {
        fc1 = Linear(dModel, dff);
        fc2 = Linear(dff, dModel);
        RegisterComponents();
    }

    public override Tensor? AuxLoss => null;
    public override Tensor forward(Tensor x) => fc2.forward(functional.gelu(fc1.forward(x)));
}

/// <summary>An MoE layer of the cluster (<see cref="RemoteMoeModule"/>): its weights live in the silos, none here.</summary>
public sealed class ClusterMoeFfn : LmFfn
{
    // Not registered as a component: the module holds no local parameters, and the layer's own
    // optimizer steps its weights in the cluster.
    private readonly RemoteMoeModule moe;

    public ClusterMoeFfn(RemoteMoeLayer layer) : base(nameof(ClusterMoeFfn))
    {
        moe = new RemoteMoeModule(layer);
    }

    public RemoteMoeLayer Layer => moe.Layer;
    public RoutingSummary? LastRouting => moe.LastRouting;
    public override Tensor? AuxLoss => training ? moe.AuxLoss : null;

    public override Tensor forward(Tensor x)
    {
        moe.train(training);
        return moe.forward(x);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) moe.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>
/// The same MoE layer computed in this process by the reference layer (plain autograd over the
/// layer's exact math, <see cref="ReferenceMoeLayer"/>), its weights drawn from the same seeds as
/// the cluster's: the baseline of the cluster's LM throughput, and how <c>./moe lm generate</c>
/// runs an exported model without a cluster.
/// </summary>
public sealed class InProcessMoeFfn : LmFfn
{
    private readonly ReferenceMoeLayer moe;
    private Tensor? aux;

    public InProcessMoeFfn(LayerSpec spec, string layerName) : base(nameof(InProcessMoeFfn))
    {
        moe = new ReferenceMoeLayer(LayerSpecMapping.ToConfig(spec), spec.Seed, layerName);
        RegisterComponents();
    }

    public override Tensor? AuxLoss => training ? aux : null;

    public override Tensor forward(Tensor x)
    {
        var output = moe.Forward(x, training);
        aux = output.Aux;
        return output.Y;
    }
}
