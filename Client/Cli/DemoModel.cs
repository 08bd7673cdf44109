using MoeCluster.Client;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MoeCluster.Cli;

/// <summary>
/// The demo's model: a local embedding, one remote MoE layer in a residual block, and a local
/// classification head. Only the MoE layer runs in the cluster.
/// </summary>
public sealed class DemoModel : Module<Tensor, Tensor>
{
    private readonly Embedding embedding;
    private readonly RemoteMoeModule moe;
    private readonly Linear head;

    public DemoModel(RemoteMoeLayer layer, int vocabulary, int classes, long seed) : base(nameof(DemoModel))
    {
        // The local weights draw from torch's global generator; seed it so runs repeat.
        random.manual_seed(seed);
        embedding = Embedding(vocabulary, layer.Spec.DModel);
        moe = new RemoteMoeModule(layer);
        head = Linear(layer.Spec.DModel, classes);
        RegisterComponents();
    }

    public RemoteMoeModule Moe => moe;

    /// <summary>No dispose scope of its own: the caller's scope must also keep <c>Moe.AuxLoss</c>.</summary>
    public override Tensor forward(Tensor tokens)
    {
        var h = embedding.forward(tokens);
        var y = h.add(moe.forward(h));
        return head.forward(y);
    }
}
