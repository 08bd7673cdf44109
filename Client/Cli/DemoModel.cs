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

    /// <summary>The weights that live in this process (embedding and head), by name; the tensors stay the model's.</summary>
    public Dictionary<string, Tensor> LocalWeights() => named_parameters()
        .Where(p => !p.name.StartsWith("moe.", StringComparison.Ordinal)).ToDictionary(p => p.name, p => (Tensor)p.parameter);

    /// <summary>Copies every local weight from <paramref name="weights"/>; names and shapes must match.</summary>
    public void LoadLocalWeights(IReadOnlyDictionary<string, Tensor> weights, string source)
    {
        using var noGrad = no_grad();
        foreach (var (name, parameter) in LocalWeights())
        {
            if (!weights.TryGetValue(name, out var value))
                throw new ArgumentException($"{source} has no tensor \"{name}\"; expected the demo model's {string.Join(", ", LocalWeights().Keys)}");
            if (!value.shape.SequenceEqual(parameter.shape))
                throw new ArgumentException($"{source} has \"{name}\" as [{string.Join(", ", value.shape)}]; the demo model expects [{string.Join(", ", parameter.shape)}]");
            parameter.copy_(value);
        }
    }

    /// <summary>No dispose scope of its own: the caller's scope must also keep <c>Moe.AuxLoss</c>.</summary>
    public override Tensor forward(Tensor tokens)
    {
        var h = embedding.forward(tokens);
        var y = h.add(moe.forward(h));
        return head.forward(y);
    }
}
