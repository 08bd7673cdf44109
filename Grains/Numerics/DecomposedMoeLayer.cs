using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Numerics;

/// <summary>
/// The layer split exactly as the grains split it — a <see cref="TopKRouter"/>, one
/// <see cref="ExpertComputation"/> per expert, and <see cref="ExpertDispatch"/> between them,
/// exchanging only tensors and the plan — driven in one process. Tests hold it to
/// <see cref="ReferenceMoeLayer"/>; the grains reuse its parts.
/// </summary>
public sealed class DecomposedMoeLayer : IDisposable
{
    private sealed record Pending(RouterForward Router, Tensor?[] Outputs, ScalarType InputDType) : IDisposable
    {
        public void Dispose()
        {
            Router.Dispose();
            foreach (var o in Outputs) o?.Dispose();
        }
    }

    private readonly Dictionary<long, Pending> pending = new();

    /// <summary>
    /// Builds the router and experts of a layer with weights derived from (seed, layer name):
    /// the same arguments give the same weights as <see cref="ReferenceMoeLayer"/>.
    /// </summary>
    public DecomposedMoeLayer(MoeLayerConfig config, long seed, string layerName = "layer",
        ExpertBackwardMode mode = ExpertBackwardMode.KeepGraph, Device? device = null)
    {
        Config = config.Validate();
        Device = device ?? CPU;
        Seed = seed;
        LayerName = layerName;
        Router = new TopKRouter(config, LayerSeeds.Gate(seed, layerName), Device);
        Experts = Enumerable.Range(0, config.NumExperts)
            .Select(e => new ExpertComputation(ExpertFfn.Create(config, LayerSeeds.Expert(seed, layerName, e), Device), mode, config.ExpertDropout))
            .ToArray();
    }

    public MoeLayerConfig Config { get; }
    public Device Device { get; }
    public long Seed { get; }
    public string LayerName { get; }
    public TopKRouter Router { get; }
    public ExpertComputation[] Experts { get; }

    /// <summary>Micro-batches whose training forward ran and whose backward has not.</summary>
    public int PendingCount => pending.Count;

    /// <summary>The layer on x; in training, the experts' dropout masks are those of (<paramref name="step"/>, <paramref name="batchId"/>).</summary>
    public MoeLayerOutput Forward(long batchId, Tensor x, bool train, long noiseSeed = 0, long step = 1)
    {
        if (train && pending.ContainsKey(batchId))
            throw new InvalidOperationException($"batch {batchId} is already in flight; run its backward before reusing the id");
        var routed = Router.Forward(x, train, noiseSeed);
        var outputs = new Tensor?[Config.NumExperts];
        try
        {
            var inputs = ExpertDispatch.Gather(x, routed.Plan);
            try
            {
                for (int e = 0; e < inputs.Length; e++)
                    if (inputs[e].shape[0] > 0)
                        outputs[e] = Experts[e].Forward(batchId, inputs[e], train, LayerSeeds.ExpertDropout(Seed, LayerName, step, batchId, e));
            }
            finally
            {
                foreach (var input in inputs) input.Dispose();
            }
            using var y = ExpertDispatch.Combine(routed.Plan, outputs, Config.DModel, Device);
            var result = new MoeLayerOutput(y.to(x.dtype, copy: true), routed.AuxLoss, routed.LoadBalancingLoss, routed.ZLoss, routed.Stats);
            if (train) pending[batchId] = new Pending(routed, outputs, x.dtype);
            else new Pending(routed, outputs, x.dtype).Dispose();
            return result;
        }
        catch
        {
            new Pending(routed, outputs, x.dtype).Dispose();
            for (int e = 0; e < Experts.Length; e++) Experts[e].Discard(batchId);
            throw;
        }
    }

    /// <summary>
    /// ∂L/∂x for ∂L/∂y = <paramref name="dy"/> and ∂L/∂aux = <paramref name="auxGrad"/>; gate and
    /// expert gradients accumulate. Consumes the batch.
    /// </summary>
    public Tensor Backward(long batchId, Tensor dy, double auxGrad = 1.0)
    {
        if (!pending.TryGetValue(batchId, out var p))
            throw new InvalidOperationException($"no training forward is pending for batch {batchId}: it never ran with train = true, or its backward already ran");
        LayerInputChecks.GradientLike(dy, p.Router.Plan.Tokens, Config.DModel);
        pending.Remove(batchId);
        using (p)
        {
            using var scope = NewDisposeScope();
            var plan = p.Router.Plan;
            var dy32 = dy.to(ScalarType.Float32, Device);
            var outputGrads = ExpertDispatch.OutputGradients(plan, dy32);
            var inputGrads = new Tensor?[Config.NumExperts];
            for (int e = 0; e < Experts.Length; e++)
                if (plan.Experts[e].Count > 0) inputGrads[e] = Experts[e].Backward(batchId, outputGrads[e]);
            var gateGrads = ExpertDispatch.GateGradients(plan, dy32, p.Outputs);
            var dx = ExpertDispatch.ScatterInputGradients(plan, inputGrads, Config.DModel, Device)
                .add_(Router.Backward(p.Router, gateGrads, auxGrad));
            return dx.to(p.InputDType, copy: true).MoveToOuterDisposeScope();
        }
    }

    /// <summary>Every trainable parameter, named as the reference layer names it.</summary>
    public IEnumerable<(string Name, Tensor Parameter)> NamedParameters()
    {
        yield return ("gate", Router.GateWeight);
        for (int e = 0; e < Experts.Length; e++)
            foreach (var (name, parameter) in Experts[e].Ffn.named_parameters())
                yield return ($"experts.{e}.{name}", parameter);
    }

    public void Dispose()
    {
        foreach (var p in pending.Values) p.Dispose();
        pending.Clear();
        foreach (var e in Experts) e.Dispose();
        Router.Dispose();
    }
}
