using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MoeCluster.Grains.Numerics;

/// <summary>A reference forward: y and aux are in the autograd graph; backward with torch.autograd.</summary>
public sealed record ReferenceOutput(Tensor Y, Tensor Aux, double LoadBalancingLoss, double ZLoss, RoutingStats Stats) : IDisposable
{
    public void Dispose() { Y.Dispose(); Aux.Dispose(); }
}

/// <summary>
/// The whole MoE layer of DESIGN.md as one module over plain autograd: the ground truth of every
/// distributed test and the baseline of every benchmark. Capacity admission is computed here
/// with tensor ops (a cumulative count per expert), independently of the router's loop, so the
/// two implementations check each other.
/// </summary>
public sealed class ReferenceMoeLayer : Module
{
    private Parameter gate;
    private readonly ModuleList<ExpertFfn> experts;
    // The experts in gate-column order and their ids: the layer's first ones (0..E−1) until Reshape.
    private ExpertFfn[] active;
    private int[] ids;

    public ReferenceMoeLayer(MoeLayerConfig config, long seed, string layerName = "layer", Device? device = null)
        : base(nameof(ReferenceMoeLayer))
    {
        Config = config.Validate();
        Device = device ?? CPU;
        Seed = seed;
        LayerName = layerName;
        gate = TopKRouter.InitGate(config, LayerSeeds.Gate(seed, layerName), Device);
        experts = new ModuleList<ExpertFfn>(Enumerable.Range(0, config.NumExperts)
            .Select(e => ExpertFfn.Create(config, LayerSeeds.Expert(seed, layerName, e), Device)).ToArray());
        RegisterComponents();
        active = experts.ToArray();
        ids = Enumerable.Range(0, config.NumExperts).ToArray();
    }

    public MoeLayerConfig Config { get; private set; }
    public Device Device { get; }
    public long Seed { get; }
    public string LayerName { get; }
    public Parameter GateWeight => gate;
    public IReadOnlyList<ExpertFfn> Experts => active;
    /// <summary>Each expert's id, in gate-column order; ids name the weights and seed the dropout masks.</summary>
    public IReadOnlyList<int> ExpertIds => ids;

    /// <summary>
    /// Gives the layer another set of experts (DESIGN.md, Elasticity): <paramref name="newGate"/>
    /// [d_model, E'] and the experts with their ids, in column order. The layer uses them from the
    /// next forward; the caller keeps ownership of what it replaced.
    /// </summary>
    public void Reshape(Parameter newGate, IReadOnlyList<ExpertFfn> newExperts, IReadOnlyList<int> newIds)
    {
        if (newExperts.Count != newIds.Count || newGate.shape[1] != newIds.Count || newGate.shape[0] != Config.DModel)
            throw new ArgumentException($"a reshaped layer needs a gate [{Config.DModel}, E] and E experts with E ids; got gate [{string.Join(", ", newGate.shape)}], {newExperts.Count} experts, {newIds.Count} ids");
        Config = (Config with { NumExperts = newIds.Count }).Validate();
        gate = newGate;
        active = newExperts.ToArray();
        ids = newIds.ToArray();
    }

    /// <summary>The gate and every expert's parameters, named as a cluster names them (<c>experts.{id}.w1</c>).</summary>
    public Dictionary<string, Tensor> NamedWeights()
    {
        var named = new Dictionary<string, Tensor> { ["gate"] = gate };
        for (int j = 0; j < active.Length; j++)
            foreach (var (name, p) in active[j].named_parameters()) named[$"experts.{ids[j]}.{name}"] = p;
        return named;
    }

    /// <summary>
    /// The layer on x. In training, <paramref name="noiseSeed"/> draws the jitter noise, and
    /// <paramref name="step"/> and <paramref name="batchId"/> the experts' dropout masks
    /// (<see cref="LayerSeeds.ExpertDropout"/>), exactly as the experts of a cluster draw them.
    /// </summary>
    public ReferenceOutput Forward(Tensor x, bool train, long noiseSeed = 0, long step = 1, long batchId = 0)
    {
        LayerInputChecks.Input(x, Config.DModel);
        int tokens = checked((int)x.shape[0]), e = Config.NumExperts, k = Config.TopK, d = Config.DModel;
        var capacity = Config.Capacity(tokens, train);
        var reportedCapacity = capacity == int.MaxValue ? 0 : capacity;
        if (tokens == 0)
            return new ReferenceOutput(zeros(0, d, x.dtype, Device), zeros([], ScalarType.Float32, Device), 0, 0,
                new RoutingStats(0, reportedCapacity, new long[e], new long[e], new long[e]));

        using var scope = NewDisposeScope();
        var xr = x.to(ScalarType.Float32, Device);
        if (train && Config.JitterEpsilon > 0)
            xr = xr.mul(TopKRouter.JitterNoise(x.shape, Config.JitterEpsilon, noiseSeed, Device));
        var logits = xr.matmul(gate);
        var probs = functional.softmax(logits, 1);
        var lse = logits.logsumexp(1);
        var (_, order) = probs.sort(1, descending: true, stable: true);
        var indices = order.narrow(1, 0, k);
        var values = probs.gather(1, indices);
        var gates = Config.NormalizeGates ? values.div(values.sum(1, keepdim: true)) : values;

        var admitted = Admitted(indices, gates, capacity);                                  // [T, k] bool
        var combine = zeros(tokens, e, ScalarType.Float32, Device)
            .scatter_add(1, indices, gates.mul(admitted.to(ScalarType.Float32)));           // [T, E]
        var chosen = zeros(tokens, e, ScalarType.Bool, Device)
            .scatter_(1, indices, admitted);                                                 // admitted (t, e)

        var y = zeros(tokens, d, ScalarType.Float32, Device);
        for (int i = 0; i < e; i++)
        {
            var rows = chosen.select(1, i).nonzero().squeeze(1);
            if (rows.shape[0] == 0) continue;
            // Rows in ascending token order, as the router sends them, so mask row j meets the same token.
            var mask = train && Config.ExpertDropout > 0
                ? ExpertDropout.Mask(rows.shape[0], Config.DFF, Config.ExpertDropout, LayerSeeds.ExpertDropout(Seed, LayerName, step, batchId, ids[i]), Config.ComputeDType, Device)
                : null;
            var output = active[i].Forward(x.index_select(0, rows).to(Config.ComputeDType), mask).to(ScalarType.Float32);
            y = y.index_add(0, rows, output.mul(combine.index_select(0, rows).narrow(1, i, 1)), HeldScalars.One);
        }

        var rank0 = functional.one_hot(indices.select(1, 0), e);
        var share = rank0.to(ScalarType.Float32).mean([0]);
        using var expertCount = e.ToScalar(); // held: see HeldScalars
        using var auxWeight = Config.AuxLossWeight.ToScalar();
        using var zWeight = Config.ZLossWeight.ToScalar();
        var loadBalancing = share.mul(probs.mean([0])).sum().mul(expertCount);
        var zLoss = lse.square().mean();
        var aux = loadBalancing.mul(auxWeight).add(zLoss.mul(zWeight));

        var routed = chosen.sum([0]).cpu().data<long>().ToArray();
        var assigned = functional.one_hot(indices, e).sum([0, 1]).cpu().data<long>().ToArray();
        var stats = new RoutingStats(tokens, reportedCapacity, routed,
            assigned.Zip(routed, (a, r) => a - r).ToArray(), rank0.sum([0]).cpu().data<long>().ToArray());
        return new ReferenceOutput(y.to(x.dtype).MoveToOuterDisposeScope(), aux.MoveToOuterDisposeScope(),
            loadBalancing.item<float>(), zLoss.item<float>(), stats);
    }

    /// <summary>
    /// Rank-major admission with tensor ops: lay the assignments out in admission order, count
    /// each expert's assignments so far with a cumulative sum, and keep those within capacity.
    /// </summary>
    private Tensor Admitted(Tensor indices, Tensor gates, int capacity)
    {
        long tokens = indices.shape[0], k = indices.shape[1];
        if (capacity == int.MaxValue) return ones(tokens, k, ScalarType.Bool, Device);
        using var noGrad = no_grad();
        var orders = new List<Tensor>();
        for (int r = 0; r < k; r++)
            orders.Add(Config.BatchPrioritized
                ? gates.select(1, r).sort(0, descending: true, stable: true).Indices
                : arange(tokens, ScalarType.Int64, Device));
        var tokenSeq = cat(orders, 0);                                                        // [k T]
        var rankSeq = arange(k, ScalarType.Int64, Device).repeat_interleave(tokens);          // [k T]
        var slot = tokenSeq.mul(k).add_(rankSeq);                                             // t k + r, in admission order
        var expertSeq = indices.flatten().index_select(0, slot);
        var position = functional.one_hot(expertSeq, Config.NumExperts).cumsum(0)
            .gather(1, expertSeq.unsqueeze(1)).squeeze(1);                                    // 1-based place in its expert's queue
        return zeros(tokens * k, ScalarType.Bool, Device)
            .scatter_(0, slot, position.le(capacity)).view(tokens, k);
    }
}
