using Microsoft.Extensions.Logging;
using MoeCluster.Grains.Compute;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Placement;
using MoeCluster.Grains.Training;
using Orleans.Concurrency;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Routing;

/// <summary>
/// The router of one layer (key: the layer's name). Reentrant, so that micro-batches overlap:
/// while one waits for its experts, another is routed. Tensor work runs on the CPU compute
/// queue; the weights are read by forwards and backwards and written only by a step, which a
/// <see cref="GrainReaderWriterGate"/> keeps apart.
/// </summary>
[Reentrant, KeepAlive]
public sealed class RouterGrain(
    ComputeQueues queues,
    IClusterSlotView slots,
    ILogger<RouterGrain> logger) : Grain, IMoeRouterGrain
{
    private const string Device = "cpu";

    private readonly ComputeQueue queue = queues.For(Device);
    private readonly GrainReaderWriterGate weights = new();
    // A null value marks a training forward still under way.
    private readonly Dictionary<long, PendingBatch?> pending = new();

    private LayerSpec? spec;
    private MoeLayerConfig? config;
    private TopKRouter? router;
    private optim.Optimizer? optimizer;
    private IMoeExpertGrain[] experts = [];
    private Task<LayerStats>? creating;
    private long version;
    private (long Id, Task<long> Task)? runningStep;

    private long microBatches, expiredBatches;
    private long[] routedTotals = [], droppedTotals = [];

    private string Layer => this.GetPrimaryKeyString();

    /// <summary>A training forward waiting for its backward: the routing and the experts' outputs, for the gate gradient.</summary>
    private sealed class PendingBatch(RouterForward routing, Tensor?[] outputs, TensorDType inputType) : IDisposable
    {
        public RouterForward Routing { get; } = routing;
        public Tensor?[] Outputs { get; } = outputs;
        public TensorDType InputType { get; } = inputType;
        public DateTime SavedAt { get; } = DateTime.UtcNow;

        public void Dispose()
        {
            Routing.Dispose();
            foreach (var o in Outputs) o?.Dispose();
        }
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        var batches = pending.Values.OfType<PendingBatch>().ToList();
        pending.Clear();
        var r = router; var o = optimizer;
        await queue.RunAsync(() =>
        {
            foreach (var b in batches) b.Dispose();
            o?.Dispose();
            r?.Dispose();
        });
    }

    public Task<LayerSpec?> GetSpec() => Task.FromResult(spec);

    public async Task<LayerStats> Create(LayerSpec newSpec)
    {
        if (spec is not null)
        {
            if (spec != newSpec)
                throw new ArgumentException($"layer \"{Layer}\" already exists with a different spec; delete it or choose another name");
            return await GetStats();
        }
        // A concurrent Create with the same spec waits for the first one instead of racing it.
        creating ??= CreateLayer(newSpec);
        try { return await creating; }
        finally { if (spec is null) creating = null; }
    }

    private async Task<LayerStats> CreateLayer(LayerSpec newSpec)
    {
        var newConfig = LayerSpecMapping.ToConfig(newSpec);
        await GrainFactory.GetGrain<IDeviceSlotRegistryGrain>(0)
            .EnsureFree(newConfig.NumExperts, $"layer \"{Layer}\" with {newConfig.NumExperts} experts", slots.LiveSilos());
        var gateSeed = LayerSeeds.Gate(newSpec.Seed, Layer);
        var (newRouter, newOptimizer) = await queue.RunAsync(() =>
        {
            var r = new TopKRouter(newConfig, gateSeed);
            return (r, OptimizerFactory.Create(newSpec.Optimizer, [r.GateWeight]));
        });
        var newExperts = Enumerable.Range(0, newConfig.NumExperts)
            .Select(e => GrainFactory.GetGrain<IMoeExpertGrain>(e, Layer)).ToArray();
        ExpertPlacement[] placements;
        try
        {
            placements = await Task.WhenAll(newExperts.Select(e => e.Initialize(newSpec)));
        }
        catch
        {
            await queue.RunAsync(() => { newOptimizer.Dispose(); newRouter.Dispose(); });
            throw;
        }
        (spec, config, router, optimizer, experts) = (newSpec, newConfig, newRouter, newOptimizer, newExperts);
        routedTotals = new long[newConfig.NumExperts];
        droppedTotals = new long[newConfig.NumExperts];
        var period = TimeSpan.FromTicks(Math.Max(TimeSpan.FromMilliseconds(100).Ticks, newSpec.SavedForwardTimeout.Ticks / 4));
        this.RegisterGrainTimer(ExpireBatches, new GrainTimerCreationOptions(period, period) { Interleave = true });
        logger.LogInformation("Layer {Layer} created: {Experts} experts, top-{K}, on {Silos} silo(s)",
            Layer, newConfig.NumExperts, newConfig.TopK, placements.Select(p => p.Silo).Distinct().Count());
        return await GetStats();
    }

    private (LayerSpec Spec, MoeLayerConfig Config, TopKRouter Router) Ready() =>
        spec is not null && config is not null && router is not null ? (spec, config, router)
        : throw new InvalidOperationException($"layer \"{Layer}\" does not exist; create it first");

    public async Task<LayerForwardResult> Forward(long batchId, TensorPayload x, bool train)
    {
        var (s, c, r) = Ready();
        CheckPayload(x, c.DModel, "x");
        if (train && !pending.TryAdd(batchId, null))
            throw new InvalidOperationException($"batch {batchId} is already in flight on layer \"{Layer}\"; run its backward (or discard it) before reusing the id");
        RouterForward? routing = null;
        Tensor?[] outputs = new Tensor?[c.NumExperts];
        var sent = new List<int>();
        try
        {
            using var reading = await weights.ReadAsync();
            var noiseSeed = LayerSeeds.Jitter(s.Seed, Layer, batchId);
            (routing, var inputs) = await queue.RunAsync(() =>
            {
                using var scope = NewDisposeScope();
                var xt = TensorWire.FromPayload(x);
                var routed = r.Forward(xt, train, noiseSeed);
                var gathered = ExpertDispatch.Gather(xt, routed.Plan);
                return (routed, gathered.Select((g, e) => routed.Plan.Experts[e].Count > 0 ? TensorWire.ToPayload(g, s.WireDType) : null).ToArray());
            });
            var calls = new List<Task<TensorPayload>>();
            for (int e = 0; e < inputs.Length; e++)
            {
                if (inputs[e] is not { } input) continue;
                sent.Add(e);
                calls.Add(experts[e].Forward(batchId, input, train));
            }
            var results = await Task.WhenAll(calls);
            var plan = routing.Plan;
            var y = await queue.RunAsync(() =>
            {
                for (int j = 0; j < sent.Count; j++)
                    outputs[sent[j]] = TensorWire.FromPayload(results[j]).to(ScalarType.Float32, disposeAfter: true);
                using var combined = ExpertDispatch.Combine(plan, outputs, c.DModel, CPU);
                return TensorWire.ToPayload(combined, x.DType);
            });
            microBatches++;
            for (int e = 0; e < c.NumExperts; e++)
            {
                routedTotals[e] += routing.Stats.Routed[e];
                droppedTotals[e] += routing.Stats.Dropped[e];
            }
            var result = new LayerForwardResult(y, routing.AuxLoss, routing.LoadBalancingLoss, routing.ZLoss,
                new RoutingSummary(routing.Stats.Tokens, routing.Stats.Capacity, routing.Stats.Routed, routing.Stats.Dropped));
            if (train)
            {
                pending[batchId] = new PendingBatch(routing, outputs, x.DType);
                routing = null; // owned by the pending batch now
            }
            return result;
        }
        catch
        {
            if (train)
            {
                pending.Remove(batchId);
                // Experts that did run keep a saved forward; free it now rather than at expiry.
                await Task.WhenAll(sent.Select(e => experts[e].Discard(batchId).ContinueWith(_ => { })));
            }
            throw;
        }
        finally
        {
            if (routing is not null)
            {
                var leftover = new PendingBatch(routing, outputs, x.DType);
                await queue.RunAsync(leftover.Dispose);
            }
        }
    }

    public async Task<TensorPayload> Backward(long batchId, TensorPayload dy, double auxGrad)
    {
        var (s, c, r) = Ready();
        if (!pending.TryGetValue(batchId, out var batch) || batch is null)
            throw new InvalidOperationException(batch is null && pending.ContainsKey(batchId)
                ? $"batch {batchId} on layer \"{Layer}\" is still in its forward; await the forward before its backward"
                : $"no training forward is pending for batch {batchId} on layer \"{Layer}\": it never ran with train = true, its backward already ran, or it expired");
        var tokens = batch.Routing.Plan.Tokens;
        if (dy.Shape.Length != 2 || dy.Shape[0] != tokens || dy.Shape[1] != c.DModel)
            throw new ArgumentException($"dy has shape [{string.Join(", ", dy.Shape)}]; expected [{tokens}, {c.DModel}] like the forward's output");
        CheckPayload(dy, c.DModel, "dy");
        if (!double.IsFinite(auxGrad))
            throw new ArgumentException($"∂L/∂aux is {auxGrad}; expected a finite number");
        pending.Remove(batchId);
        try
        {
            using var reading = await weights.ReadAsync();
            var plan = batch.Routing.Plan;
            var grads = await queue.RunAsync(() =>
            {
                using var scope = NewDisposeScope();
                var dyt = TensorWire.FromPayload(dy).to(ScalarType.Float32);
                return ExpertDispatch.OutputGradients(plan, dyt)
                    .Select((g, e) => plan.Experts[e].Count > 0 ? TensorWire.ToPayload(g, s.WireDType) : null).ToArray();
            });
            var sent = Enumerable.Range(0, c.NumExperts).Where(e => grads[e] is not null).ToArray();
            var dxs = await Task.WhenAll(sent.Select(e => experts[e].Backward(batchId, grads[e]!)));
            return await queue.RunAsync(() =>
            {
                using var scope = NewDisposeScope();
                var inputGrads = new Tensor?[c.NumExperts];
                for (int j = 0; j < sent.Length; j++) inputGrads[sent[j]] = TensorWire.FromPayload(dxs[j]);
                var dyt = TensorWire.FromPayload(dy).to(ScalarType.Float32);
                var gateGrads = ExpertDispatch.GateGradients(plan, dyt, batch.Outputs);
                var dx = ExpertDispatch.ScatterInputGradients(plan, inputGrads, c.DModel, CPU)
                    .add_(r.Backward(batch.Routing, gateGrads, auxGrad));
                return TensorWire.ToPayload(dx, batch.InputType);
            });
        }
        finally
        {
            await queue.RunAsync(batch.Dispose);
        }
    }

    public Task<long> Step(long stepId)
    {
        Ready();
        if (stepId <= version) return Task.FromResult(version); // already applied
        if (runningStep is { } running)
        {
            if (running.Id == stepId) return running.Task;      // the same step, asked twice at once
            throw new InvalidOperationException($"step {stepId} cannot start on layer \"{Layer}\" while step {running.Id} is being applied");
        }
        if (stepId != version + 1)
            throw new InvalidOperationException($"step {stepId} cannot be applied to layer \"{Layer}\" at version {version}; steps are applied in order, next is {version + 1}");
        if (pending.Count > 0)
            throw new InvalidOperationException(
                $"step {stepId} cannot be applied to layer \"{Layer}\": {pending.Count} training micro-batch(es) have not finished their backward " +
                $"(ids {string.Join(", ", pending.Keys.Order().Take(8))}); run their backward or discard them first");
        var task = ApplyStep(stepId);
        runningStep = (stepId, task);
        return task;
    }

    private async Task<long> ApplyStep(long stepId)
    {
        try
        {
            var (s, _, r) = Ready();
            using var writing = await weights.WriteAsync();
            var scale = 1.0;
            if (s.Optimizer.MaxGradNorm > 0)
            {
                var expertNorms = await Task.WhenAll(experts.Select(e => e.GradientSquaredNorm()));
                var gateNorm = await queue.RunAsync(() => OptimizerFactory.GradientSquaredNorm([r.GateWeight]));
                scale = OptimizerFactory.ClipScale(s.Optimizer.MaxGradNorm, expertNorms.Sum() + gateNorm);
            }
            await Task.WhenAll(experts.Select(e => e.Step(stepId, scale)));
            var o = optimizer!;
            await queue.RunAsync(() => OptimizerFactory.Step(o, [r.GateWeight], scale));
            version = stepId;
            logger.LogDebug("Layer {Layer} applied step {Step} (gradient scale {Scale})", Layer, stepId, scale);
            return version;
        }
        finally
        {
            runningStep = null;
        }
    }

    public async Task Discard(long batchId)
    {
        Ready();
        if (pending.Remove(batchId, out var batch) && batch is not null)
        {
            await queue.RunAsync(batch.Dispose);
            await Task.WhenAll(experts.Select(e => e.Discard(batchId)));
        }
    }

    private async Task ExpireBatches()
    {
        if (spec is null || pending.Count == 0) return;
        var cutoff = DateTime.UtcNow - spec.SavedForwardTimeout;
        var expired = pending.Where(p => p.Value is not null && p.Value.SavedAt < cutoff).ToList();
        foreach (var (id, _) in expired) pending.Remove(id);
        if (expired.Count == 0) return;
        expiredBatches += expired.Count;
        await queue.RunAsync(() => { foreach (var (_, b) in expired) b!.Dispose(); });
        logger.LogWarning("Layer {Layer} freed {Count} micro-batch(es) whose backward did not come within {Timeout}",
            Layer, expired.Count, spec.SavedForwardTimeout);
    }

    public Task<long> GetVersion() => Task.FromResult(version);

    public async Task<LayerStats> GetStats()
    {
        var (s, _, _) = Ready();
        var expertStats = await Task.WhenAll(experts.Select(e => e.GetStats()));
        return new LayerStats
        {
            Layer = Layer,
            Spec = s,
            Version = version,
            Router = new ExpertPlacement(slots.Local.Silo.ToString(), Device),
            Experts = expertStats.Select((st, e) => new ExpertLoad(st, routedTotals[e], droppedTotals[e])).ToArray(),
            MicroBatches = microBatches,
            PendingBatches = pending.Count,
            ExpiredBatches = expiredBatches,
        };
    }

    public async Task<NamedTensor[]> GetWeights()
    {
        var (_, _, r) = Ready();
        using var reading = await weights.ReadAsync();
        var gate = await queue.RunAsync(() => new NamedTensor("gate", TensorWire.ToPayload(r.GateWeight)));
        var expertWeights = await Task.WhenAll(experts.Select(e => e.GetWeights()));
        return [gate, .. expertWeights.SelectMany(w => w)];
    }

    private static void CheckPayload(TensorPayload p, int dModel, string name)
    {
        if (p.Shape.Length != 2)
            throw new ArgumentException($"{name} must be 2-D [tokens, d_model]; got shape [{string.Join(", ", p.Shape)}]");
        if (p.Shape[1] != dModel)
            throw new ArgumentException($"{name} has d_model {p.Shape[1]}; the layer expects {dModel}");
        var expected = p.ElementCount * TensorPayload.ElementSize(p.DType);
        if (p.Data.LongLength != expected)
            throw new ArgumentException($"{name} of shape [{string.Join(", ", p.Shape)}] {p.DType} has {p.Data.LongLength} bytes; expected {expected}");
    }
}
