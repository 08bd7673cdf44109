using Microsoft.Extensions.Logging;
using System.Text.RegularExpressions;
using MoeCluster.Grains.Checkpoints;
using MoeCluster.Grains.Compute;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Placement;
using MoeCluster.Grains.Training;
using Orleans.Concurrency;
using Orleans.Placement;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Routing;

/// <summary>
/// The router of one layer (key: the layer's name). Reentrant, so that micro-batches overlap:
/// while one waits for its experts, another is routed. Tensor work runs on the CPU compute
/// queue; the weights are read by forwards and backwards and written only by a step, which a
/// <see cref="GrainReaderWriterGate"/> keeps apart. It checkpoints the gate at the layer's
/// checkpoint steps, after every expert's checkpoint of that step is durable, so its own newest
/// checkpoint is the layer's newest durable version. That commit runs in the background while
/// the next step's micro-batches go on; the next step waits for it.
/// <para>
/// A training forward or backward repeated with the same batch id (the SDK lost the answer with a
/// gateway) gets the first call's answer instead of running twice, so losing a connection is not
/// losing a step.
/// </para>
/// <para>
/// Placed on the silo that first calls it: the SDK creates a layer through its gateway grain
/// (<see cref="IMoeLayerGateway"/>), which runs on the silo whose gateway the client reached, so
/// x, y, ∂y and ∂x travel client ↔ gateway silo once instead of being forwarded on to a router on
/// another silo. After a lost silo it comes back beside the gateway of the call that needs it.
/// </para>
/// </summary>
[Reentrant, KeepAlive, PreferLocalPlacement]
public sealed partial class RouterGrain(
    ComputeQueues queues,
    IClusterSlotView slots,
    ICheckpointStore store,
    ILogger<RouterGrain> logger) : Grain, IMoeRouterGrain
{
    private const string Device = "cpu";

    private readonly ComputeQueue queue = queues.For(Device);
    private readonly GrainReaderWriterGate weights = new();
    // A null value marks a training forward still under way.
    private readonly Dictionary<long, PendingBatch?> pending = new();
    // Counts the times the micro-batches in flight were dropped (a recovery, a deletion). A forward
    // admitted before a drop that only then gets through the gate must not put its batch back:
    // the client replays that batch, and the replay would find its id taken.
    private long drops;

    private LayerSpec? spec;
    private MoeLayerConfig? config;
    private TopKRouter? router;
    private optim.Optimizer? optimizer;
    // Gate column j is expert grain expertIds[j]; ids are never reused or renumbered.
    private IMoeExpertGrain[] experts = [];
    private int[] expertIds = [];
    private int nextExpertId;
    private long expertChanges;
    // Removed experts are deleted once a durable router checkpoint no longer names them.
    private readonly List<int> retiring = [];
    // A training forward ran since the last step: the step has begun, so the expert set is fixed until it is applied.
    private bool trainedSinceStep;
    private Task<LayerStats>? creating;
    private long version;
    private long durableVersion;
    private TrainingControls controls = new();
    private (long Id, Task<StepResult> Task)? runningStep;
    // The gradient scale computed for a step, reused if that step is repeated after a partial
    // failure (some experts stepped and cleared their gradients, so the norm cannot be measured again).
    private (long Id, double Scale)? stepScale;
    // The commit (experts' checkpoints, then the router's) of the newest checkpointed step.
    private Task commit = Task.CompletedTask;
    // Answers of training calls kept for repeats: forwards until their backward, backwards until the step.
    private readonly Dictionary<long, (int Fingerprint, Task<LayerForwardResult> Answer)> forwardAnswers = new();
    private readonly Dictionary<long, (int Fingerprint, Task<TensorPayload> Answer)> backwardAnswers = new();
    private IGrainTimer? expiryTimer;

    // Set when the router came back from a checkpoint: its experts may be ahead of it (a step it
    // never committed) or hold state of micro-batches it no longer knows, so the first call
    // brings them level before anything else runs.
    private bool reconciled = true;
    private Task? reconciling;
    private readonly string epoch = Guid.NewGuid().ToString("N");

    private long microBatches, expiredBatches;

    // The incarnation of each expert that has worked in the current step. An expert answering
    // with another one lost the step's state (see ExpertStateLostException); cleared at each step.
    private readonly Dictionary<int, string> incarnations = new();

    private string? IncarnationOf(int expert) => incarnations.TryGetValue(expert, out var i) ? i : null;

    private void Remember(int expert, ExpertOutput output)
    {
        if (incarnations.TryGetValue(expert, out var known) && known != output.Incarnation)
            throw new ExpertStateLostException($"expert {Layer}/{expert} answered from a different incarnation mid-step; the layer must recover");
        incarnations[expert] = output.Incarnation;
    }
    private long[] routedTotals = [], droppedTotals = [];
    private SpecializationTally specialization = new(0);

    private string Layer => this.GetPrimaryKeyString();
    private string CheckpointKey => CheckpointCodec.RouterKey(Layer);

    [GeneratedRegex("^[A-Za-z0-9._-]{1,128}$")]
    private static partial Regex LayerName();

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

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        var versions = await store.ListVersionsAsync(CheckpointKey, cancellationToken);
        if (versions.Length == 0) return;
        for (int i = versions.Length - 1; ; i--)
        {
            try
            {
                // Its replicas are made again at the next step, once the experts hold that step's weights.
                replicasToRestore = await LoadCheckpoint(versions[i]);
                break;
            }
            catch (CheckpointCorruptException e) when (i > 0)
            {
                logger.LogError("Router of layer {Layer}: {Problem}; using version {Previous} instead", Layer, e.Message, versions[i - 1]);
            }
        }
        durableVersion = version;
        reconciled = false;
        knownSilos = SilosWithSlots();
        logger.LogInformation("Router of layer {Layer} activated on silo {Silo}; restored version {Version} from its checkpoint",
            Layer, slots.Local.Silo, version);
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        await CommitSettled();
        await DiscardPending();
        var r = router; var o = optimizer;
        await queue.RunAsync(() =>
        {
            o?.Dispose();
            r?.Dispose();
        });
    }

    private async Task DiscardPending()
    {
        var batches = pending.Values.OfType<PendingBatch>().ToList();
        pending.Clear();
        drops++;
        forwardAnswers.Clear();
        backwardAnswers.Clear();
        if (batches.Count > 0) await queue.RunAsync(() => { foreach (var b in batches) b.Dispose(); });
    }

    /// <summary>Makes the layer's fields describe <paramref name="newSpec"/>, with a fresh router if needed.</summary>
    private async Task Install(LayerSpec newSpec, int[] ids)
    {
        if (ids.Length != newSpec.NumExperts)
            throw new CheckpointCorruptException($"layer \"{Layer}\" names {ids.Length} expert ids for {newSpec.NumExperts} experts");
        SetExperts(ids);
        if (spec == newSpec && router is not null) return;
        var newConfig = LayerSpecMapping.ToConfig(newSpec);
        var gateSeed = LayerSeeds.Gate(newSpec.Seed, Layer);
        var old = (router, optimizer);
        (router, optimizer) = await queue.RunAsync(() =>
        {
            old.optimizer?.Dispose();
            old.router?.Dispose();
            var r = new TopKRouter(newConfig, gateSeed);
            return (r, OptimizerFactory.Create(newSpec.Optimizer, [r.GateWeight]));
        });
        (spec, config) = (newSpec, newConfig);
        routedTotals = new long[newConfig.NumExperts];
        droppedTotals = new long[newConfig.NumExperts];
        specialization = new SpecializationTally(newConfig.NumExperts);
        expiryTimer?.Dispose();
        var period = TimeSpan.FromTicks(Math.Max(TimeSpan.FromMilliseconds(100).Ticks, newSpec.SavedForwardTimeout.Ticks / 4));
        expiryTimer = this.RegisterGrainTimer(ExpireBatches, new GrainTimerCreationOptions(period, period) { Interleave = true });
    }

    private void SetExperts(int[] ids)
    {
        expertIds = ids;
        experts = ids.Select(id => GrainFactory.GetGrain<IMoeExpertGrain>(id, Layer)).ToArray();
    }

    /// <returns>The replica count of each expert the checkpoint records.</returns>
    private async Task<Dictionary<int, int>> LoadCheckpoint(long target)
    {
        var bytes = await store.ReadAsync(CheckpointKey, target)
            ?? throw new InvalidOperationException($"layer \"{Layer}\" has no router checkpoint of version {target}; the store keeps only the two newest");
        var record = CheckpointCodec.Decode(bytes, CheckpointKey, target, CheckpointRecord.RouterKind, Layer, -1);
        var recordSpec = CheckpointCodec.DecodeSpec(record);
        // Schema ≤ 2 records predate elastic layers: their experts are 0..E−1.
        var ids = record.ExpertIds.Length > 0 ? record.ExpertIds : Enumerable.Range(0, recordSpec.NumExperts).ToArray();
        await Install(recordSpec, ids);
        nextExpertId = Math.Max(record.NextExpertId, ids.Length == 0 ? 0 : ids.Max() + 1);
        expertChanges = record.ExpertChanges;
        controls = CheckpointCodec.DecodeControls(record);
        var r = router!; var o = optimizer!; var owner = $"the router of layer \"{Layer}\"";
        await queue.RunAsync(() =>
        {
            ModelState.Restore([("gate", r.GateWeight)], record.Weights, owner);
            ModelState.RestoreOptimizer(o, record.OptimizerState, owner);
            ModelState.ZeroGradients([r.GateWeight]);
        });
        version = record.Version;
        return record.ReplicaCounts;
    }

    private async Task WriteCheckpoint() => await Write(await Capture());

    private Task<CheckpointRecord> Capture()
    {
        var (s, _, r) = Ready();
        var o = optimizer!;
        var at = version;
        var c = controls;
        var (ids, next, changes) = (expertIds, nextExpertId, expertChanges);
        var replicaCounts = ReplicaCounts();
        return queue.RunAsync(() => new CheckpointRecord
        {
            ReplicaCounts = replicaCounts,
            ExpertIds = ids,
            NextExpertId = next,
            ExpertChanges = changes,
            Kind = CheckpointRecord.RouterKind,
            Layer = Layer,
            Version = at,
            SpecJson = CheckpointCodec.EncodeSpec(s),
            Weights = ModelState.Capture([("gate", r.GateWeight)]),
            OptimizerState = ModelState.CaptureOptimizer(o),
            ControlsJson = CheckpointCodec.EncodeControls(c),
        });
    }

    private async Task Write(CheckpointRecord record)
    {
        var at = record.Version;
        try
        {
            await store.WriteAsync(CheckpointKey, at, CheckpointCodec.Encode(record));
        }
        catch (Exception failure) when (failure is not ArgumentException)
        {
            // The store's own exception types need not cross to the caller; its message does.
            throw new CheckpointWriteException($"checkpoint {CheckpointKey} version {at} of the router of layer \"{Layer}\" could not be written: {failure.Message}");
        }
    }

    private Task EnsureReconciled() => reconciled ? Task.CompletedTask : reconciling ??= Reconcile();

    private async Task Reconcile()
    {
        try
        {
            await BringExpertsTo(version);
            incarnations.Clear();
            reconciled = true;
        }
        finally
        {
            reconciling = null;
        }
    }

    public Task<string> GetEpoch() => Task.FromResult(epoch);

    /// <summary>
    /// Resets every expert to <paramref name="target"/>. An expert that can only reach an older
    /// version (its newer checkpoint was corrupt) takes the whole layer back with it, router
    /// included, so that versions are never mixed.
    /// </summary>
    private async Task BringExpertsTo(long target)
    {
        var reached = await Task.WhenAll(experts.Select(e => e.ResetTo(target)));
        var lowest = reached.Min();
        if (lowest >= target) return;
        logger.LogError("Layer {Layer} goes back to version {Lowest}: an expert could not restore version {Target}", Layer, lowest, target);
        await LoadCheckpoint(lowest); // throws, naming the version, if the router no longer has it
        durableVersion = lowest;
        await Task.WhenAll(experts.Select(e => e.ResetTo(lowest)));
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
        if (!LayerName().IsMatch(Layer))
            throw new ArgumentException($"layer name \"{Layer}\" is not valid; expected 1 to 128 of the characters A-Z a-z 0-9 . _ -");
        var newConfig = LayerSpecMapping.ToConfig(newSpec);
        await GrainFactory.GetGrain<IDeviceSlotRegistryGrain>(0)
            .EnsureFree(newConfig.NumExperts, $"layer \"{Layer}\" with {newConfig.NumExperts} experts", slots.LiveSilos());
        var newExperts = Enumerable.Range(0, newConfig.NumExperts)
            .Select(e => GrainFactory.GetGrain<IMoeExpertGrain>(e, Layer)).ToArray();
        var placements = await Task.WhenAll(newExperts.Select(e => e.Initialize(newSpec)));
        await Install(newSpec, Enumerable.Range(0, newConfig.NumExperts).ToArray());
        nextExpertId = newConfig.NumExperts;
        expertChanges = 0;
        version = durableVersion = 0;
        controls = new TrainingControls();
        await WriteCheckpoint(); // the layer exists once its router's version 0 is durable
        knownSilos = SilosWithSlots();
        await GrainFactory.GetGrain<ILayerCatalogGrain>(0).Add(Layer);
        logger.LogInformation("Layer {Layer} created: {Experts} experts, top-{K}, on {Silos} silo(s)",
            Layer, newConfig.NumExperts, newConfig.TopK, placements.Select(p => p.Silo).Distinct().Count());
        return await GetStats();
    }

    private (LayerSpec Spec, MoeLayerConfig Config, TopKRouter Router) Ready() =>
        spec is not null && config is not null && router is not null ? (spec, config, router)
        : throw new InvalidOperationException($"layer \"{Layer}\" does not exist; create it first");

    public async Task<LayerForwardResult> Forward(long batchId, TensorPayload x, bool train, TokenLabels? labels, string? epoch = null)
    {
        var (_, c, _) = Ready();
        if (train && epoch is not null && epoch != this.epoch)
            throw new RouterStateLostException(
                $"the forward of batch {batchId} on layer \"{Layer}\" was sent to an activation of the router lost with its silo; " +
                $"this one came back at version {version}, so the layer must recover and replay it");
        CheckPayload(x, c.DModel, "x");
        if (labels is not null) SpecializationTally.Check(labels, x.Shape[0]);
        if (!train) return await RunForward(batchId, x, train, labels);
        var fingerprint = Fingerprint(x, 0);
        if (forwardAnswers.TryGetValue(batchId, out var earlier) && earlier.Fingerprint == fingerprint)
            return await earlier.Answer; // a repeat whose first answer was lost on the way back
        var answer = RunForward(batchId, x, train, labels);
        if (!answer.IsFaulted)
        {
            forwardAnswers[batchId] = (fingerprint, answer);
            backwardAnswers.Remove(batchId); // the id is used again: its backward is a new one
        }
        try
        {
            return await answer;
        }
        catch
        {
            if (forwardAnswers.TryGetValue(batchId, out var kept) && kept.Answer == answer) forwardAnswers.Remove(batchId);
            throw;
        }
    }

    /// <summary>Identifies a call's tensor, so that a repeat is told apart from a reused batch id.</summary>
    private static int Fingerprint(TensorPayload p, double extra)
    {
        var hash = new HashCode();
        hash.Add(p.DType);
        foreach (var d in p.Shape) hash.Add(d);
        hash.Add(System.IO.Hashing.XxHash3.HashToUInt64(p.Data)); // vectorised: HashCode.AddBytes took 4–6 ms per 8 MiB batch
        hash.Add(extra);
        return hash.ToHashCode();
    }

    private async Task<LayerForwardResult> RunForward(long batchId, TensorPayload x, bool train, TokenLabels? labels)
    {
        var (s, c, r) = Ready();
        await EnsureReconciled();
        if (train && pending.Count >= s.MaxPendingBatches && !pending.ContainsKey(batchId))
            throw new LayerOverloadedException(
                $"layer \"{Layer}\" holds {pending.Count} training micro-batches awaiting their backward, its limit (LayerSpec.MaxPendingBatches = {s.MaxPendingBatches}); " +
                "run their backward or discard them before more forwards");
        if (train && !pending.TryAdd(batchId, null))
            throw new InvalidOperationException($"batch {batchId} is already in flight on layer \"{Layer}\"; run its backward (or discard it) before reusing the id");
        if (train) trainedSinceStep = true;
        var admittedAt = drops;
        RouterForward? routing = null;
        Tensor?[] outputs = new Tensor?[c.NumExperts];
        var sent = new List<int>();
        try
        {
            using var reading = await weights.ReadAsync();
            // A recovery took the gate first and dropped this forward's batch (the call came
            // late, say rerouted from a lost silo): running it now would put back a batch the
            // client is replaying. No drop happens while the gate is held for reading.
            if (train && drops != admittedAt)
                throw new RouterStateLostException(
                    $"the forward of batch {batchId} on layer \"{Layer}\" was dropped by a recovery of the layer before it ran; the client replays it");
            var at = version; // read inside the gate: a step under way has moved its experts on already
            var noiseSeed = LayerSeeds.Jitter(s.Seed, Layer, batchId);
            (routing, var inputs) = await queue.RunAsync(() =>
            {
                using var scope = NewDisposeScope();
                var xt = TensorWire.FromPayload(x);
                var routed = r.Forward(xt, train, noiseSeed);
                var gathered = ExpertDispatch.Gather(xt, routed.Plan);
                return (routed, gathered.Select((g, e) => routed.Plan.Experts[e].Count > 0 ? TensorWire.ToPayload(g, s.WireDType) : null).ToArray());
            });
            var calls = new List<Task<ExpertOutput>>();
            for (int e = 0; e < inputs.Length; e++)
            {
                if (inputs[e] is not { } input) continue;
                sent.Add(e);
                var known = train ? IncarnationOf(e) : null;
                var target = experts[e]; // the retry runs the lambda again, after the loop has moved on
                calls.Add(train ? UndeliveredRetry.Call(() => target.Forward(batchId, input, train, at, known))
                    : InferenceForward(e, target, batchId, input, at)); // inference may share the rows with replicas
            }
            var answers = await Task.WhenAll(calls);
            if (train) for (int j = 0; j < sent.Count; j++) Remember(sent[j], answers[j]);
            var results = answers.Select(a => a.Value).ToArray();
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
            if (labels is not null) specialization.Add(routing.Plan, routing.Stats, labels);
            MoeCluster.Grains.Telemetry.MoeMetrics.RecordRouting(Layer, routing.Stats.Routed, routing.Stats.Dropped);
            var result = new LayerForwardResult(y, routing.AuxLoss, routing.LoadBalancingLoss, routing.ZLoss,
                new RoutingSummary(routing.Stats.Tokens, routing.Stats.Capacity, routing.Stats.Routed, routing.Stats.Dropped), epoch);
            if (train)
            {
                pending[batchId] = new PendingBatch(routing, outputs, x.DType);
                routing = null; // owned by the pending batch now
            }
            return result;
        }
        catch
        {
            if (train && drops == admittedAt) // after a drop the id is no longer this call's
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
        Ready();
        var fingerprint = Fingerprint(dy, auxGrad);
        if (backwardAnswers.TryGetValue(batchId, out var earlier) && earlier.Fingerprint == fingerprint)
            return await earlier.Answer; // a repeat whose first answer was lost: the gradients are in
        var answer = RunBackward(batchId, dy, auxGrad);
        // Kept even when it fails, once it got past its checks: some experts may hold its
        // gradients, so it must not run again; a repeat sees the failure and the SDK recovers.
        if (!answer.IsFaulted || answer.Exception?.InnerException is not (InvalidOperationException or ArgumentException))
            backwardAnswers[batchId] = (fingerprint, answer);
        return await answer;
    }

    private async Task<TensorPayload> RunBackward(long batchId, TensorPayload dy, double auxGrad)
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
        forwardAnswers.Remove(batchId);
        try
        {
            using var reading = await weights.ReadAsync();
            var at = version; // inside the gate, as in RunForward
            var plan = batch.Routing.Plan;
            // dy is decoded once, here, and kept for the gate gradients below.
            var (dyt, grads) = await queue.RunAsync(() =>
            {
                using var scope = NewDisposeScope();
                var decoded = TensorWire.FromPayload(dy).to(ScalarType.Float32, disposeAfter: true);
                var perExpert = ExpertDispatch.OutputGradients(plan, decoded)
                    .Select((g, e) => plan.Experts[e].Count > 0 ? TensorWire.ToPayload(g, s.WireDType) : null).ToArray();
                return (decoded.DetachFromDisposeScope(), perExpert);
            });
            using var dyKept = dyt;
            var sent = Enumerable.Range(0, c.NumExperts).Where(e => grads[e] is not null).ToArray();
            var answers = await Task.WhenAll(sent.Select(e => UndeliveredRetry.Call(() => experts[e].Backward(batchId, grads[e]!, at, IncarnationOf(e)))));
            for (int j = 0; j < sent.Length; j++) Remember(sent[j], answers[j]);
            var dxs = answers.Select(a => a.Value).ToArray();
            return await queue.RunAsync(() =>
            {
                using var scope = NewDisposeScope();
                var inputGrads = new Tensor?[c.NumExperts];
                for (int j = 0; j < sent.Length; j++) inputGrads[sent[j]] = TensorWire.FromPayload(dxs[j]);
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

    public async Task<StepResult> Step(long stepId, string? epoch = null)
    {
        var (s, _, _) = Ready();
        await EnsureReconciled();
        if (stepId <= version)
        {
            // Already applied. Durable before it returns, if the layer asks for that and its write failed the first time.
            if (stepId == version && s.CheckpointBeforeStepReturns) await MakeDurable($"step {stepId} of layer \"{Layer}\" is applied but not durable");
            return new StepResult(version, durableVersion);
        }
        if (epoch is not null && epoch != this.epoch)
            throw new RouterStateLostException(
                $"step {stepId} cannot be applied to layer \"{Layer}\": its micro-batches ran on another activation of the router, " +
                $"lost with its silo; this one came back at version {version} without their gradients, so the layer must recover and replay them");
        if (runningStep is { } running)
        {
            if (running.Id == stepId) return await running.Task; // the same step, asked twice at once
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
        return await task;
    }

    private async Task<StepResult> ApplyStep(long stepId)
    {
        try
        {
            var (s, _, r) = Ready();
            using var writing = await weights.WriteAsync();
            await MakeDurable($"step {stepId} is not applied to layer \"{Layer}\"");
            var c = controls;
            var scale = 1.0;
            if (stepScale is { } known && known.Id == stepId) scale = known.Scale;
            else if (s.Optimizer.MaxGradNorm > 0)
            {
                // Frozen parameters do not train, so their gradients do not count towards the norm.
                var at = version;
                var expertNorms = await Task.WhenAll(experts.Select((e, i) => c.IsExpertFrozen(expertIds[i])
                    ? Task.FromResult(0.0)
                    : UndeliveredRetry.Call(() => e.GradientSquaredNorm(at, IncarnationOf(i)))));
                var gateNorm = c.FreezeRouter ? 0 : await queue.RunAsync(() => OptimizerFactory.GradientSquaredNorm([r.GateWeight]));
                scale = OptimizerFactory.ClipScale(s.Optimizer.MaxGradNorm, expertNorms.Sum() + gateNorm);
            }
            stepScale = (stepId, scale);
            // Experts step and, at a checkpoint step, capture their state before they answer.
            await Task.WhenAll(experts.Select((e, i) => UndeliveredRetry.Call(() => e.Step(stepId, scale, IncarnationOf(i),
                new ExpertStepControl(c.IsExpertFrozen(expertIds[i]), s.Optimizer.LearningRate * c.ExpertMultiplier(expertIds[i]))))));
            incarnations.Clear();
            backwardAnswers.Clear();
            var o = optimizer!;
            var gateRate = c.RouterLearningRate ?? s.Optimizer.LearningRate;
            await queue.RunAsync(() =>
            {
                if (c.FreezeRouter)
                {
                    ModelState.ZeroGradients([r.GateWeight]); // frozen: no update, no decay, no optimizer state advanced
                    return;
                }
                OptimizerFactory.SetLearningRate(o, gateRate);
                OptimizerFactory.Step(o, [r.GateWeight], scale);
            });
            version = stepId;
            trainedSinceStep = false;
            if (stepId % s.CheckpointEvery == 0)
            {
                commit = Commit(await Capture());
                if (s.CheckpointBeforeStepReturns) await commit;
            }
            await SpreadIfSilosJoined(); // scale-out: a silo that joined takes experts here, between steps
            await RefreshReplicas(); // replicas never serve stale weights: they hold the new version before the step returns
            logger.LogDebug("Layer {Layer} applied step {Step} (gradient scale {Scale}, durable {Durable})", Layer, stepId, scale, durableVersion);
            return new StepResult(version, durableVersion);
        }
        finally
        {
            runningStep = null;
        }
    }

    /// <summary>
    /// Makes a checkpointed step durable: every expert's checkpoint of it, then the router's own
    /// last, since the router's newest checkpoint is what the layer comes back to.
    /// </summary>
    private async Task Commit(CheckpointRecord routerRecord)
    {
        var at = routerRecord.Version;
        await Task.WhenAll(experts.Select(e => UndeliveredRetry.Call(() => e.FlushCheckpoint(at))));
        await Write(routerRecord);
        durableVersion = Math.Max(durableVersion, at);
        await RetireRemoved();
    }

    private async Task CommitSettled()
    {
        try { await commit; }
        catch (Exception e) { logger.LogDebug("Layer {Layer}: the last checkpoint commit failed: {Error}", Layer, e.Message); }
    }

    public async Task<long> Flush()
    {
        Ready();
        await MakeDurable($"layer \"{Layer}\" is not durable");
        return durableVersion;
    }

    /// <summary>
    /// Before the next step is applied, the current version must be durable if it was a checkpoint
    /// step: its commit is awaited, and done again if it failed. The run never goes on more than
    /// one step beyond what its checkpoints hold. <paramref name="refusal"/> says what fails if not.
    /// </summary>
    private async Task MakeDurable(string refusal)
    {
        var (s, _, _) = Ready();
        if (durableVersion >= version || version % s.CheckpointEvery != 0) return;
        try
        {
            await commit;
        }
        catch (Exception first)
        {
            logger.LogWarning("Layer {Layer}: the checkpoint of version {Version} was not written ({Error}); writing it again",
                Layer, version, first.Message);
            try
            {
                commit = Commit(await Capture());
                await commit;
            }
            catch (CheckpointWriteException again)
            {
                throw new CheckpointWriteException($"{refusal} until version {version} is durable: {again.Message}");
            }
        }
    }

    public async Task<long> Recover(long? target = null)
    {
        Ready();
        using var writing = await weights.WriteAsync();
        await CommitSettled(); // a commit that completes still counts
        var to = target ?? durableVersion;
        if (to < 0 || to > durableVersion)
            throw new ArgumentException($"layer \"{Layer}\" can go back to a durable version from 0 to {durableVersion}; version {to} was asked");
        var dropped = pending.Count;
        await DiscardPending();
        var from = version;
        if (version > to) await LoadCheckpoint(to); // throws, naming the version, when the store no longer has it
        else
        {
            var r = router!;
            await queue.RunAsync(() => ModelState.ZeroGradients([r.GateWeight]));
        }
        durableVersion = to;
        // Lost experts reactivate elsewhere from their checkpoints here; survivors drop their
        // gradients and saved forwards, or roll back a step the layer never committed.
        await BringExpertsTo(durableVersion);
        incarnations.Clear();
        stepScale = null;
        version = durableVersion;
        trainedSinceStep = false;
        reconciled = true;
        logger.LogWarning("Layer {Layer} recovered: version {From} → durable version {Version}, {Dropped} micro-batch(es) in flight dropped",
            Layer, from, version, dropped);
        return version;
    }

    public async Task SetTrainingControls(TrainingControls newControls)
    {
        Ready();
        TrainingControlsCheck.Validate(newControls, expertIds, Layer);
        await EnsureReconciled();
        // The write side of the gate waits for forwards and backwards under way, and keeps new ones out.
        using var writing = await weights.WriteAsync();
        if (pending.Count > 0 || runningStep is not null)
            throw new InvalidOperationException(
                $"training controls of layer \"{Layer}\" change at a step boundary; {pending.Count} training micro-batch(es) are in flight" +
                (runningStep is { } running ? $" and step {running.Id} is being applied" : "") + "; finish or discard them first");
        controls = newControls;
        logger.LogInformation("Layer {Layer} training controls from step {Step}: router {Router}, experts frozen {Frozen}, multipliers {Multipliers}",
            Layer, version + 1, newControls.FreezeRouter ? "frozen" : $"lr {newControls.RouterLearningRate?.ToString() ?? "of the spec"}",
            newControls.FreezeExperts ? "all" : $"[{string.Join(", ", newControls.FrozenExperts)}]",
            string.Join(", ", newControls.ExpertLearningRateMultipliers.Select(m => $"{m.Key}: {m.Value}")));
    }

    public Task<TrainingControls> GetTrainingControls() => Task.FromResult(controls);

    public async Task Delete()
    {
        Ready();
        using var writing = await weights.WriteAsync();
        await CommitSettled();
        await DiscardPending();
        await Task.WhenAll(experts.Select(e => e.Delete()));
        await DeleteReplicas();
        await RetireRemoved();
        await store.DeleteAsync(CheckpointKey);
        await GrainFactory.GetGrain<ILayerCatalogGrain>(0).Remove(Layer);
        var r = router; var o = optimizer;
        (spec, config, router, optimizer, experts, expertIds) = (null, null, null, null, [], []);
        controls = new TrainingControls();
        expiryTimer?.Dispose();
        await queue.RunAsync(() => { o?.Dispose(); r?.Dispose(); });
        logger.LogInformation("Layer {Layer} deleted", Layer);
        DeactivateOnIdle();
    }

    public async Task Discard(long batchId)
    {
        Ready();
        forwardAnswers.Remove(batchId);
        if (pending.Remove(batchId, out var batch) && batch is not null)
        {
            await queue.RunAsync(batch.Dispose);
            await Task.WhenAll(experts.Select(e => e.Discard(batchId)));
        }
    }

    private async Task ExpireBatches()
    {
        if (spec is null) return;
        ExpireImport(spec.SavedForwardTimeout);
        if (pending.Count == 0) return;
        var cutoff = DateTime.UtcNow - spec.SavedForwardTimeout;
        var expired = pending.Where(p => p.Value is not null && p.Value.SavedAt < cutoff).ToList();
        foreach (var (id, _) in expired)
        {
            pending.Remove(id);
            forwardAnswers.Remove(id);
        }
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
            Moves = moves.ToArray(),
            Replicas = await ReplicaStats(),
            RouterSiloLiveTensors = torch.Tensor.TotalCount,
            KeptAnswers = forwardAnswers.Count + backwardAnswers.Count,
        };
    }

    public Task<long> CountSiloLiveTensors() => Task.FromResult(MoeCluster.Grains.Telemetry.LiveTensors.CountAfterCollection());

    public Task<SpecializationReport> GetSpecialization()
    {
        Ready();
        return Task.FromResult(specialization.Report(Layer, version));
    }

    public Task ResetSpecialization()
    {
        var (_, c, _) = Ready();
        specialization = new SpecializationTally(c.NumExperts);
        return Task.CompletedTask;
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
