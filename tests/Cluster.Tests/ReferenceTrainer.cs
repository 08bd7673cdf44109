using MoeCluster.Grains.Checkpoints;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// The reference layer trained the way the cluster trains a layer: same spec, same seeds, same
/// jitter noise and dropout masks per (step, batch id), same optimizer, global-norm clipping and
/// <see cref="TrainingControls"/>. One optimizer per part (gate, each expert), as the grains
/// have, so that a part's learning rate and freezing apply to it alone. Experts are added,
/// split and removed as the router does it (<see cref="ExpertSetPlan"/>, <see cref="GateColumns"/>,
/// <see cref="OptimizerColumns"/>), the new experts built as their grains build them.
/// </summary>
public sealed class ReferenceTrainer : IDisposable
{
    // Part 0 is the gate; part j + 1 the expert in gate column j.
    private (Parameter[] Parameters, optim.Optimizer Optimizer)[] parts;
    private int nextId;

    public ReferenceTrainer(string layerName, LayerSpec spec)
    {
        Name = layerName;
        Spec = spec;
        Layer = new ReferenceMoeLayer(LayerSpecMapping.ToConfig(spec), spec.Seed, layerName);
        parts = new[] { new[] { Layer.GateWeight } }
            .Concat(Layer.Experts.Select(e => e.parameters().ToArray()))
            .Select(ps => (ps, OptimizerFactory.Create(spec.Optimizer, ps))).ToArray();
        nextId = spec.NumExperts;
    }

    public void AddExperts(int count, ExpertInit init) => Apply(ExpertSetPlan.Add(Layer.ExpertIds.ToArray(), nextId, count, init, Name));

    public void RemoveExperts(params int[] ids) => Apply(ExpertSetPlan.Remove(Layer.ExpertIds.ToArray(), nextId, ids, Name));

    private void Apply(ExpertSetPlan plan)
    {
        var oldIds = Layer.ExpertIds.ToArray();
        var config = Layer.Config with { NumExperts = plan.Ids.Length };
        var experts = new ExpertFfn[plan.Ids.Length];
        var newParts = new (Parameter[] Parameters, optim.Optimizer Optimizer)[plan.Ids.Length + 1];
        for (int j = 0; j < plan.Ids.Length; j++)
        {
            var kept = Array.IndexOf(oldIds, plan.Ids[j]);
            if (kept >= 0)
            {
                experts[j] = Layer.Experts[kept];
                newParts[j + 1] = parts[kept + 1];
                continue;
            }
            experts[j] = ExpertFfn.Create(config, LayerSeeds.Expert(Spec.Seed, Name, plan.Ids[j]));
            var ps = experts[j].parameters().ToArray();
            var optimizer = OptimizerFactory.Create(Spec.Optimizer, ps);
            if (plan.Parent is { } parent)
            {
                var from = Array.IndexOf(oldIds, parent);
                ModelState.Restore(experts[j].named_parameters(), ModelState.Capture(Layer.Experts[from].named_parameters()), "reference split");
                ModelState.RestoreOptimizer(optimizer, ModelState.CaptureOptimizer(parts[from + 1].Optimizer), "reference split");
            }
            newParts[j + 1] = (ps, optimizer);
        }
        var gate = GateColumns.Reshape(Layer.GateWeight, plan.Sources, j => GateColumns.Fresh(Spec.DModel, LayerSeeds.GateColumn(Spec.Seed, Name, plan.Ids[j])));
        newParts[0] = ([gate], OptimizerColumns.Reshape(parts[0].Optimizer, Spec.Optimizer, gate, plan.Sources));
        parts[0].Optimizer.Dispose();
        foreach (var id in plan.Removed)
        {
            var column = Array.IndexOf(oldIds, id);
            parts[column + 1].Optimizer.Dispose();
            Layer.Experts[column].Dispose();
        }
        Layer.Reshape(gate, experts, plan.Ids);
        parts = newParts;
        nextId = plan.NextId;
    }

    public string Name { get; }
    public LayerSpec Spec { get; }
    public ReferenceMoeLayer Layer { get; }
    public TrainingControls Controls { get; set; } = new();
    /// <summary>Steps applied so far; forwards belong to the next one.</summary>
    public long Version { get; private set; }

    /// <summary>Forward and backward of one micro-batch; returns y (caller disposes) and fills <paramref name="dx"/>.</summary>
    public Tensor ForwardBackward(long batchId, Tensor x, Tensor dy, double auxGrad, out Tensor dx)
    {
        using var input = x.detach().requires_grad_(true);
        using var output = Layer.Forward(input, train: true, noiseSeed: LayerSeeds.Jitter(Spec.Seed, Name, batchId), step: Version + 1, batchId: batchId);
        using (var loss = output.Y.mul(dy).sum().add(output.Aux.mul(auxGrad))) loss.backward();
        using var grad = input.grad!;
        dx = grad.clone();
        return output.Y.detach().clone();
    }

    /// <summary>What one micro-batch's training forward routes, and its α·L_aux + β·L_z; keeps nothing.</summary>
    public (double Aux, RoutingStats Stats) Routing(long batchId, Tensor x)
    {
        using var noGrad = no_grad();
        using var output = Layer.Forward(x, train: true, noiseSeed: LayerSeeds.Jitter(Spec.Seed, Name, batchId), step: Version + 1, batchId: batchId);
        return (output.Aux.item<float>(), output.Stats);
    }

    public void Step()
    {
        bool Frozen(int part) => part == 0 ? Controls.FreezeRouter : Controls.IsExpertFrozen(Layer.ExpertIds[part - 1]);
        var training = Enumerable.Range(0, parts.Length).Where(p => !Frozen(p)).ToArray();
        var scale = OptimizerFactory.ClipScale(Spec.Optimizer.MaxGradNorm,
            OptimizerFactory.GradientSquaredNorm(training.SelectMany(p => parts[p].Parameters)));
        for (int p = 0; p < parts.Length; p++)
        {
            var (parameters, optimizer) = parts[p];
            if (Frozen(p))
            {
                optimizer.zero_grad();
                continue;
            }
            OptimizerFactory.SetLearningRate(optimizer, p == 0
                ? Controls.RouterLearningRate ?? Spec.Optimizer.LearningRate
                : Spec.Optimizer.LearningRate * Controls.ExpertMultiplier(Layer.ExpertIds[p - 1]));
            OptimizerFactory.Step(optimizer, parameters, scale);
        }
        Version++;
    }

    public Dictionary<string, Tensor> Weights() => Layer.NamedWeights();

    public void Dispose()
    {
        foreach (var (_, optimizer) in parts) optimizer.Dispose();
        Layer.Dispose();
    }
}
