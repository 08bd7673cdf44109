using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MoeCluster.Cli.Lm;

/// <summary>One pre-LayerNorm block: x + attention(LN(x)), then x + FFN(LN(x)) over every token.</summary>
public sealed class LmBlock : Module<Tensor, Tensor>
{
    private readonly LayerNorm ln1;
    private readonly CausalSelfAttention attn;
    private readonly LayerNorm ln2;
    private readonly LmFfn ffn;

    public LmBlock(int dModel, int heads, LmFfn ffn) : base(nameof(LmBlock))
    {
        ln1 = LayerNorm(dModel);
        attn = new CausalSelfAttention(dModel, heads);
        ln2 = LayerNorm(dModel);
        this.ffn = ffn;
        RegisterComponents();
    }

    public LmFfn Ffn => ffn;

    public override Tensor forward(Tensor x)
    {
        x = x.add(attn.forward(ln1.forward(x)));
        long b = x.shape[0], t = x.shape[1], d = x.shape[2];
        var h = ffn.forward(ln2.forward(x).reshape(b * t, d));
        return x.add(h.view(b, t, d));
    }
}

/// <summary>
/// The byte-level decoder-only Transformer: byte and position embeddings, the blocks, a final
/// LayerNorm and a linear head to the 256 next-byte logits. Which FFN each block has (dense,
/// cluster MoE, in-process MoE) is the caller's choice; the rest of the weights draw from
/// torch's generator seeded with the config's seed, so every kind starts from the same model.
/// </summary>
public sealed class SwitchLm : Module<Tensor, Tensor>
{
    private readonly Embedding tok;
    private readonly Embedding pos;
    private readonly ModuleList<LmBlock> blocks;
    private readonly LayerNorm lnf;
    private readonly Linear head;

    public SwitchLm(LmConfig config, Func<int, LmFfn> ffnOfBlock) : base(nameof(SwitchLm))
    {
        Config = config.Validate();
        // Each part draws from a seed of its own, so that a dense model and an MoE one of the same
        // seed share their attention, embeddings and head (MoE layers draw from their layer seeds).
        random.manual_seed(PartSeed(config.Seed, 0));
        tok = Embedding(LmConfig.Vocabulary, config.DModel);
        pos = Embedding(config.Context, config.DModel);
        blocks = new ModuleList<LmBlock>();
        for (int i = 0; i < config.Layers; i++)
        {
            random.manual_seed(PartSeed(config.Seed, 1 + 2 * i));
            var ffn = ffnOfBlock(i);
            random.manual_seed(PartSeed(config.Seed, 2 + 2 * i));
            blocks.Add(new LmBlock(config.DModel, config.Heads, ffn));
        }
        random.manual_seed(PartSeed(config.Seed, 1 + 2 * config.Layers));
        lnf = LayerNorm(config.DModel);
        head = Linear(config.DModel, LmConfig.Vocabulary, hasBias: false);
        RegisterComponents();
    }

    private static long PartSeed(long seed, int part) => unchecked(seed * 1_000_003 + part);

    public LmConfig Config { get; }
    public IReadOnlyList<LmBlock> Blocks => blocks.ToList();
    public IEnumerable<ClusterMoeFfn> ClusterLayers => blocks.Select(b => b.Ffn).OfType<ClusterMoeFfn>();

    /// <summary>Next-byte logits [batch, T, 256] for bytes [batch, T], T ≤ context.</summary>
    public override Tensor forward(Tensor bytes)
    {
        long t = bytes.shape[1];
        if (t > Config.Context) throw new ArgumentException($"the input has {t} positions; the model's context is {Config.Context}");
        var x = tok.forward(bytes).add(pos.forward(arange(t, ScalarType.Int64, bytes.device)));
        foreach (var block in blocks) x = block.forward(x);
        return head.forward(lnf.forward(x));
    }

    /// <summary>The sum of the MoE layers' aux losses of the last training forward (0 for a dense model).</summary>
    public Tensor AuxLoss()
    {
        Tensor total = zeros([]);
        foreach (var aux in blocks.Select(b => b.Ffn.AuxLoss).OfType<Tensor>()) total = total.add(aux);
        return total;
    }

    /// <summary>The parameters that live in this process, by name (the cluster's layers hold theirs).</summary>
    public Dictionary<string, Parameter> LocalParameters() => named_parameters().ToDictionary(p => p.name, p => p.parameter);

    /// <summary>
    /// Copies every local parameter from <paramref name="tensors"/>[<paramref name="prefix"/> + name]; the
    /// names under the prefix must be exactly the model's and the shapes equal. <paramref name="source"/> names the file in errors.
    /// </summary>
    public void LoadLocalParameters(IReadOnlyDictionary<string, Tensor> tensors, string prefix, string source)
    {
        var parameters = LocalParameters();
        var stored = tensors.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).Select(k => k[prefix.Length..]).ToHashSet();
        var missing = parameters.Keys.Except(stored).Order().ToList();
        var extra = stored.Except(parameters.Keys).Order().ToList();
        if (missing.Count > 0 || extra.Count > 0)
            throw new ArgumentException($"{source} does not fit the model: {missing.Count} tensor(s) missing ({string.Join(", ", missing.Take(4))}), " +
                $"{extra.Count} unknown ({string.Join(", ", extra.Take(4))})");
        using var noGrad = no_grad();
        foreach (var (name, p) in parameters)
        {
            var value = tensors[prefix + name];
            if (!value.shape.SequenceEqual(p.shape))
                throw new ArgumentException($"{source} has {name} as [{string.Join(", ", value.shape)}]; the model expects [{string.Join(", ", p.shape)}]");
            p.copy_(value);
        }
    }
}
