using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using MoeCluster.Grains.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Client;

/// <summary>
/// One MoE layer of the cluster, called with TorchSharp tensors. Forwards may overlap; each
/// training forward gets a batch id that its backward names. Gradients accumulate over
/// micro-batches until <see cref="StepAsync()"/>.
/// <para>
/// When a silo is lost mid-step, the calls of this object do not fail: it waits for the lost
/// grains to come back from their checkpoints, has the layer return to its newest durable
/// version (<see cref="IMoeRouterGrain.Recover"/>), replays the training micro-batches since
/// then in their original order, and carries on; <see cref="Recoveries"/> counts it and a
/// warning is logged. The run ends with the weights it would have had without the failure, as
/// long as this object is the only one training the layer.
/// </para>
/// <para>
/// A call that failed only on its way (a gateway went away, as when a silo stops gracefully)
/// while the router and the experts kept their state is first sent again: the router answers a
/// repeated batch id with the first call's answer, so nothing is replayed (<see cref="Repeats"/>).
/// </para>
/// </summary>
public sealed partial class RemoteMoeLayer
{
    // Batch ids must not collide between clients of one layer: a random start per client, then a counter.
    private static long nextBatchId = RandomNumberGenerator.GetInt32(int.MaxValue) * (1L << 24);

    private readonly IMoeRouterGrain router;
    // Training-path calls go through the gateway grain on the client's gateway silo (see IMoeLayerGateway).
    private readonly IMoeLayerGateway gateway;
    private readonly ConnectionLossSignal? connectionLoss;
    private readonly ILogger logger;
    private readonly TimeSpan recoveryTimeout;
    private readonly ReplayLog log = new();
    private readonly SemaphoreSlim recovering = new(1, 1);
    private long recoveryGeneration;
    private long? version;
    // The router activation this client last trained with. Another one means the router came
    // back from its checkpoint (its silo was lost) and may be behind: the layer must recover.
    private string? routerEpoch;
    private (long Batch, Exception Error)? backwardFailure;
    private readonly LayerInputGuard guard;

    internal RemoteMoeLayer(IClusterClient client, string name, LayerSpec spec, ILogger? logger = null,
        TimeSpan? recoveryTimeout = null, ConnectionLossSignal? connectionLoss = null, LayerInputGuard? guard = null)
    {
        this.guard = guard ?? new LayerInputGuard(true, LayerInputGuard.OrleansDefaultMaxMessageBytes);
        weightPartBytes = DefaultWeightPartBytes;
        Name = name;
        Spec = spec;
        router = client.GetGrain<IMoeRouterGrain>(name);
        gateway = client.GetGrain<IMoeLayerGateway>(name);
        this.connectionLoss = connectionLoss;
        this.logger = logger ?? NullLogger.Instance;
        this.recoveryTimeout = recoveryTimeout ?? TimeSpan.FromSeconds(60);
    }

    public string Name { get; }
    /// <summary>The layer's spec; its expert count follows the changes made through this object.</summary>
    public LayerSpec Spec { get; private set; }

    /// <summary>How many times this object recovered the layer from a lost silo.</summary>
    public int Recoveries { get; private set; }

    /// <summary>How many calls were sent again, with no recovery, after failing on their way.</summary>
    public int Repeats { get; private set; }

    /// <summary>How long the last recovery took, from the failed call to the replayed state.</summary>
    public TimeSpan? LastRecoveryTime { get; private set; }

    /// <summary>Micro-batches (forward, and backward where it had run) replayed by the last recovery.</summary>
    public int LastReplayedMicroBatches { get; private set; }

    /// <summary>A fresh batch id, unique to this process.</summary>
    public static long NewBatchId() => Interlocked.Increment(ref nextBatchId);

    private CancellationToken Lost => connectionLoss?.Token ?? CancellationToken.None;

    private async Task<long> CurrentStep() => (version ??= await Retry(() => gateway.GetVersion(Lost))) + 1;

    /// <summary>
    /// y for x = [T, d_model] (Float32, BFloat16 or Float16; y comes back in x's dtype). With
    /// <paramref name="train"/>, the cluster keeps what backward needs under the returned batch id.
    /// <paramref name="labels"/> (token ids and/or classes, one per row) feed the layer's
    /// specialization report (<see cref="GetSpecializationAsync"/>).
    /// </summary>
    public async Task<RemoteLayerForward> ForwardAsync(Tensor x, bool train = true, long? batchId = null, TokenLabels? labels = null)
    {
        ArgumentNullException.ThrowIfNull(x);
        CheckShape(x);
        guard.Check(x, nameof(x), Name, Spec);
        return await ForwardCheckedAsync(x, train, batchId, labels);
    }

    private void CheckShape(Tensor x)
    {
        if (x.dim() != 2 || x.shape[1] != Spec.DModel)
            throw new ArgumentException($"x has shape [{string.Join(", ", x.shape)}]; layer \"{Name}\" expects [tokens, {Spec.DModel}]", nameof(x));
    }

    private static void CheckAuxGrad(double auxGrad)
    {
        if (!double.IsFinite(auxGrad))
            throw new ArgumentException($"∂L/∂aux is {auxGrad}; expected a finite number", nameof(auxGrad));
    }

    // The forward once x is checked (by ForwardAsync, or whole by ForwardMicroBatchesAsync).
    private async Task<RemoteLayerForward> ForwardCheckedAsync(Tensor x, bool train, long? batchId, TokenLabels? labels)
    {
        var id = batchId ?? NewBatchId();
        var payload = TensorWire.ToPayload(x);
        LayerForwardResult result;
        if (!train)
        {
            while (true)
            {
                var generation = Interlocked.Read(ref recoveryGeneration);
                try
                {
                    result = await Retry(() => gateway.Forward(id, payload, false, labels, null, Lost));
                    break;
                }
                catch (Exception e) when (TransientFailures.IsStateLost(e))
                {
                    await RecoverAsync(e, generation); // an expert came back at another version
                }
            }
        }
        else
        {
            // Refused here, as the router would: a repeat of a logged id would get the router's
            // first answer, since repeats are how this client resends calls lost on their way.
            if (log.Find(id) is { Dy: null })
                throw new InvalidOperationException($"batch {id} is already in flight on layer \"{Name}\"; run its backward (or discard it) before reusing the id");
            var entry = log.AddForward(await CurrentStep(), id, payload);
            try
            {
                result = await ForwardLogged(entry, labels);
            }
            catch
            {
                log.Remove(id); // refused (bad input, a duplicate id): nothing to replay
                throw;
            }
        }
        var y = TensorWire.FromPayload(result.Y, x.device);
        return new RemoteLayerForward(id, y, result.AuxLoss, result.LoadBalancingLoss, result.ZLoss, result.Routing);
    }

    // Labels go with the first attempt only: a replay does not count its tokens in the report again.
    private async Task<LayerForwardResult> ForwardLogged(ReplayLog.Batch entry, TokenLabels? labels)
    {
        var repeats = 0;
        while (true)
        {
            var generation = Interlocked.Read(ref recoveryGeneration);
            try
            {
                // With the router activation the step trains on: a forward that reaches its successor
                // late (after a recovery replayed the batch) is refused there, not run twice.
                var result = await gateway.Forward(entry.Id, entry.X, true, labels, routerEpoch, Lost);
                entry.Epoch = result.Epoch;
                if (routerEpoch is null || routerEpoch == result.Epoch)
                {
                    routerEpoch = result.Epoch;
                    return result;
                }
                await RecoverAsync(new InvalidOperationException($"the router of layer \"{Name}\" was reactivated from its checkpoint"), generation);
                if (entry.Replayed is { } replayed) return replayed;
            }
            catch (Exception e) when (TransientFailures.IsTransient(e))
            {
                if (await CanRepeat(e, repeats++, generation)) continue;
                await RecoverAsync(e, generation);
                if (entry.Replayed is { } replayed) return replayed; // the replay ran this forward
            }
        }
    }

    /// <summary>
    /// ∂L/∂x of the batch's forward, for ∂L/∂y = <paramref name="dy"/> and ∂L/∂aux = <paramref name="auxGrad"/>
    /// (fold loss scaling and gradient accumulation into both). The layer's weight gradients accumulate.
    /// </summary>
    public async Task<Tensor> BackwardAsync(long batchId, Tensor dy, double auxGrad = 1.0)
    {
        ArgumentNullException.ThrowIfNull(dy);
        guard.Check(dy, nameof(dy), Name, Spec);
        CheckAuxGrad(auxGrad);
        return await BackwardCheckedAsync(batchId, dy, auxGrad);
    }

    // The backward once dy and ∂L/∂aux are checked (by BackwardAsync, or whole by BackwardMicroBatchesAsync).
    private async Task<Tensor> BackwardCheckedAsync(long batchId, Tensor dy, double auxGrad)
    {
        var payload = TensorWire.ToPayload(dy);
        var entry = log.Find(batchId);
        if (entry is { Dy: not null })
            throw new InvalidOperationException(
                $"no training forward is pending for batch {batchId} on layer \"{Name}\": it never ran with train = true, its backward already ran, or it expired");
        var repeats = 0;
        while (true)
        {
            var generation = Interlocked.Read(ref recoveryGeneration);
            try
            {
                var dx = await gateway.Backward(batchId, payload, auxGrad, Lost);
                if (entry is not null)
                {
                    entry.Dy = payload;
                    entry.AuxGrad = auxGrad;
                    log.RecordBackward(await CurrentStep(), entry);
                }
                return TensorWire.FromPayload(dx, dy.device);
            }
            catch (Exception e) when (TransientFailures.IsTransient(e) && entry is not null)
            {
                if (await CanRepeat(e, repeats++, generation)) continue;
                await RecoverAsync(e, generation);
            }
            catch (InvalidOperationException e) when (entry?.Epoch is not null)
            {
                // The router came back from its checkpoint (its silo was lost) and no longer knows
                // the batch: recover. Otherwise the refusal is the caller's to see.
                if (!await RouterWasReplaced(entry.Epoch)) throw;
                await RecoverAsync(e, generation);
            }
        }
    }

    private async Task<bool> RouterWasReplaced(string epoch) => await Retry(() => gateway.GetEpoch(Lost)) != epoch;

    /// <summary>
    /// Whether a call that failed in transit is simply sent again: once, when no recovery ran
    /// meanwhile, no expert lost its state, and the router is still the activation this client
    /// trained with (it keeps the first call's answer, or runs the call if it never arrived).
    /// </summary>
    private async Task<bool> CanRepeat(Exception failure, int repeats, long generation)
    {
        if (repeats > 0 || routerEpoch is null || TransientFailures.IsStateLost(failure)) return false;
        if (Interlocked.Read(ref recoveryGeneration) != generation) return false;
        try
        {
            if (await RouterWasReplaced(routerEpoch)) return false;
        }
        catch (Exception e) when (TransientFailures.IsTransient(e) || e is TimeoutException)
        {
            return false;
        }
        Repeats++;
        Telemetry.ClientMetrics.RecordRepeat(Name);
        logger.LogInformation("Layer {Layer}: a call failed on its way ({Cause}); the router kept its state, sending it again",
            Name, failure.GetType().Name);
        return true;
    }

    /// <summary>Applies the next step (the layer's version + 1) and returns the new version.</summary>
    public async Task<long> StepAsync()
    {
        ThrowIfBackwardFailed();
        return await StepAsync(await CurrentStep());
    }

    /// <summary>Applies step <paramref name="stepId"/>; a step already applied is ignored, so a retry is safe.</summary>
    public async Task<long> StepAsync(long stepId)
    {
        ThrowIfBackwardFailed();
        var repeats = 0;
        while (true)
        {
            var generation = Interlocked.Read(ref recoveryGeneration);
            try
            {
                // With the router activation this client trained the step on: a replaced one refuses.
                var result = await gateway.Step(stepId, routerEpoch, Lost);
                log.MarkApplied(stepId);
                // One durable step more is kept: if that step's checkpoint turns out corrupt, the
                // layer falls back one version and the step is replayed from here.
                log.ForgetThrough(result.DurableVersion - 1);
                version = result.Version;
                return result.Version;
            }
            catch (Exception e) when (TransientFailures.IsTransient(e))
            {
                if (await CanRepeat(e, repeats++, generation)) continue;
                await RecoverAsync(e, generation);
            }
            catch (InvalidOperationException e) when (routerEpoch is not null)
            {
                // A step refused by a router that came back from its checkpoint behind this client.
                if (!await RouterWasReplaced(routerEpoch)) throw;
                await RecoverAsync(e, generation);
            }
        }
    }

    /// <summary>
    /// Waits for the lost grains, returns the layer to its durable version and replays the logged
    /// micro-batches since. One recovery at a time: calls that failed during the same outage wait
    /// for it instead of starting their own.
    /// </summary>
    private async Task RecoverAsync(Exception cause, long failedGeneration)
    {
        await recovering.WaitAsync();
        try
        {
            if (Interlocked.Read(ref recoveryGeneration) != failedGeneration) return; // another call already recovered
            var started = DateTime.UtcNow;
            logger.LogWarning("Layer {Layer}: a call failed ({Cause}); recovering from the newest durable version", Name, cause.GetType().Name + ": " + cause.Message);
            while (true)
            {
                try
                {
                    var durable = await gateway.Recover(Lost);
                    await Replay(durable);
                    break;
                }
                catch (Exception e) when (TransientFailures.IsTransient(e) && DateTime.UtcNow - started < recoveryTimeout)
                {
                    // The lost silo is not declared dead yet, or another went: wait and start over.
                    await Task.Delay(250);
                }
                catch (Exception e) when (TransientFailures.IsTransient(e))
                {
                    throw new TimeoutException($"layer \"{Name}\" did not recover within {recoveryTimeout}: {e.Message}", e);
                }
            }
            Recoveries++;
            Telemetry.ClientMetrics.RecordRecovery(Name, LastReplayedMicroBatches);
            LastRecoveryTime = DateTime.UtcNow - started;
            Interlocked.Increment(ref recoveryGeneration);
            logger.LogWarning("Layer {Layer} recovered in {Seconds:F1} s, replaying {Batches} micro-batch(es) (recovery {Count})",
                Name, LastRecoveryTime.Value.TotalSeconds, LastReplayedMicroBatches, Recoveries);
        }
        finally
        {
            recovering.Release();
        }
    }

    private async Task Replay(long durable)
    {
        routerEpoch = await gateway.GetEpoch(Lost);
        var reached = version ?? durable;
        var retained = log.After(durable).Where(s => s.Applied).Select(s => s.StepId).ToHashSet();
        var lost = Enumerable.Range(1, (int)Math.Max(0, reached - durable)).Select(i => durable + i).Where(s => !retained.Contains(s)).ToList();
        if (lost.Count > 0)
            throw new InvalidOperationException(
                $"layer \"{Name}\" went back to version {durable}, but this client no longer holds the micro-batches of step(s) " +
                $"{string.Join(", ", lost)}; the run cannot continue exactly from here");
        version = durable;
        LastReplayedMicroBatches = 0;
        foreach (var (stepId, applied, forwards, backwards, boundary) in log.After(durable))
        {
            // The layer went back to a checkpoint older than these changes: make them where they were made.
            foreach (var change in boundary)
            {
                if (change is TrainingControls controls) await router.SetTrainingControls(controls);
                else if (change is ExpertSetRequest experts) Spec = (await experts.SendTo(router)).Spec;
            }
            LastReplayedMicroBatches += forwards.Count;
            foreach (var batch in forwards)
            {
                var result = await gateway.Forward(batch.Id, batch.X, true, null, routerEpoch, Lost);
                batch.Epoch = result.Epoch;
                batch.Replayed = result;
            }
            foreach (var batch in backwards)
                await gateway.Backward(batch.Id, batch.Dy!, batch.AuxGrad, Lost);
            if (applied)
            {
                var result = await gateway.Step(stepId, routerEpoch, Lost);
                version = result.Version;
            }
        }
    }

    /// <summary>Runs a call that changes nothing, retrying it while the cluster recovers from a lost silo.</summary>
    private async Task<T> Retry<T>(Func<Task<T>> call)
    {
        var started = DateTime.UtcNow;
        while (true)
        {
            try { return await call(); }
            catch (Exception e) when (TransientFailures.IsTransient(e) && !TransientFailures.IsStateLost(e) && DateTime.UtcNow - started < recoveryTimeout)
            {
                await Task.Delay(250);
            }
        }
    }

    internal void RecordBackwardFailure(long batch, Exception error) => backwardFailure ??= (batch, error);

    /// <summary>Throws (once) the failure of a backward that ran inside libtorch's autograd engine, where it could not throw.</summary>
    public void ThrowIfBackwardFailed()
    {
        if (backwardFailure is not { } failure) return;
        backwardFailure = null;
        throw new InvalidOperationException(
            $"the backward of batch {failure.Batch} through layer \"{Name}\" failed, so its gradients are incomplete: {failure.Error.Message}", failure.Error);
    }

    /// <summary>
    /// Returns once the checkpoints of every applied step are durable (a step returns before they
    /// are written, unless <see cref="LayerSpec.CheckpointBeforeStepReturns"/>): before the client
    /// goes away or the cluster is stopped. Returns the durable version.
    /// </summary>
    public Task<long> FlushAsync() => Retry(() => router.Flush());

    /// <summary>
    /// Takes the layer back to <paramref name="version"/>, a durable version that the store still
    /// holds (it keeps the two newest per key), with no gradients and no micro-batch in flight: for
    /// a trainer that resumes from its own checkpoint of that step while the layer went on past it.
    /// What this object logged for replay is dropped; call it before training with this object.
    /// </summary>
    public async Task<long> RestoreAsync(long version)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(version);
        var reached = await Retry(() => router.Recover(version));
        log.ForgetThrough(long.MaxValue);
        routerEpoch = null;
        this.version = reached;
        return reached;
    }

    /// <summary>
    /// Freezes the router, experts, or chosen experts, and sets per-expert learning-rate multipliers
    /// and the router's own rate, from the next step on (see <see cref="TrainingControls"/>). Call it
    /// at a step boundary: the layer refuses while a training micro-batch is in flight. A recovery
    /// after a lost silo sets them again at the step they were set at, so replay stays exact.
    /// </summary>
    public async Task SetTrainingControlsAsync(TrainingControls controls)
    {
        ArgumentNullException.ThrowIfNull(controls);
        ThrowIfBackwardFailed();
        var step = await CurrentStep();
        await Retry(async () => { await router.SetTrainingControls(controls); return true; });
        log.SetControls(step, controls);
    }

    /// <summary>
    /// Adds <paramref name="count"/> experts at a step boundary (before the next step's first
    /// forward): fresh, or copies of a live expert (<see cref="ExpertInit.Split"/>: weights,
    /// optimizer state and gate column). They get new ids; no live expert is renumbered. A recovery
    /// after a lost silo makes the change again at the step it was made at, so replay stays exact.
    /// </summary>
    public Task<ExpertSetChange> AddExpertsAsync(int count, ExpertInit? init = null) =>
        ChangeExpertsAsync(number => new ExpertSetRequest(number, count, init ?? ExpertInit.Fresh, null));

    /// <summary>Adds <paramref name="count"/> copies of expert <paramref name="id"/> (see <see cref="AddExpertsAsync"/>).</summary>
    public Task<ExpertSetChange> SplitExpertAsync(int id, int count = 1) => AddExpertsAsync(count, ExpertInit.Split(id));

    /// <summary>Removes the experts with these ids at a step boundary; the others keep their ids.</summary>
    public Task<ExpertSetChange> RemoveExpertsAsync(params int[] ids) =>
        ChangeExpertsAsync(number => new ExpertSetRequest(number, 0, null, ids));

    /// <summary>The layer's expert ids in gate-column order, and the number of its newest expert-set change.</summary>
    public Task<ExpertSetChange> GetExpertSetAsync() => Retry(() => router.GetExpertSet());

    private async Task<ExpertSetChange> ChangeExpertsAsync(Func<long, ExpertSetRequest> request)
    {
        ThrowIfBackwardFailed();
        var step = await CurrentStep();
        // Numbered, so that sending it again after a lost answer does not apply it twice.
        var current = await GetExpertSetAsync();
        var change = request(current.ChangeNumber + 1);
        var result = await Retry(() => change.SendTo(router));
        log.RecordExpertChange(step, change);
        Spec = result.Spec;
        return result;
    }

    /// <summary>
    /// Moves expert <paramref name="id"/> live to <paramref name="silo"/> (a silo as the layer's
    /// stats name it), at a step boundary; the layer's results do not change. Returns the move.
    /// </summary>
    public Task<ExpertMove> MoveExpertAsync(int id, string silo) => Retry(() => router.MoveExpert(id, silo));

    /// <summary>
    /// Moves experts live, at a step boundary, until the cluster's device slots are evenly used.
    /// The router does this by itself at the end of the first step after a silo joins; this asks
    /// for it now. Returns the moves made (none when the slots are even already).
    /// </summary>
    public Task<ExpertMove[]> SpreadExpertsAsync() => Retry(() => router.SpreadExperts());

    /// <summary>
    /// Gives expert <paramref name="id"/> <paramref name="count"/> more read-only replicas on other
    /// devices, at a step boundary: inference forwards split its tokens among them with unchanged
    /// outputs; training uses the expert alone; each step refreshes the replicas before it returns.
    /// Returns every replica of the expert (<see cref="LayerStats.Replicas"/> shows their load).
    /// </summary>
    public Task<ExpertReplica[]> ReplicateExpertAsync(int id, int count = 1)
    {
        // One id for every try of this call: a retry after a lost answer adds no more replicas.
        var requestId = Guid.NewGuid();
        return Retry(() => router.ReplicateExpert(id, count, requestId));
    }

    /// <summary>Removes every replica of expert <paramref name="id"/>; returns how many there were.</summary>
    public Task<int> RemoveReplicasAsync(int id) => Retry(() => router.RemoveReplicas(id));

    public Task<TrainingControls> GetTrainingControlsAsync() => Retry(() => router.GetTrainingControls());

    /// <summary>Optimizer steps applied to the layer.</summary>
    public Task<long> GetVersionAsync() => Retry(() => gateway.GetVersion(Lost));

    /// <summary>Frees a training forward whose backward will not come.</summary>
    public async Task DiscardAsync(long batchId)
    {
        log.Remove(batchId);
        await Retry(async () => { await router.Discard(batchId); return true; });
    }

    public Task<LayerStats> GetStatsAsync() => Retry(() => router.GetStats());

    /// <summary>Per expert, what the labelled forwards sent it: classes, top token ids, entropy, drop share.</summary>
    public Task<SpecializationReport> GetSpecializationAsync() => Retry(() => router.GetSpecialization());

    /// <summary>Starts the specialization report over.</summary>
    public Task ResetSpecializationAsync() => Retry(async () => { await router.ResetSpecialization(); return true; });

    /// <summary>
    /// The largest part of a weight that one call of an export or import carries (16 MiB, or less
    /// when the client's message limit is smaller): a layer, or one of its experts, may be far
    /// larger than one message may be.
    /// </summary>
    public int WeightPartBytes
    {
        get => weightPartBytes;
        set => weightPartBytes = value >= 1 && value <= guard.MaxMessageBytes - LayerInputGuard.Headroom ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value,
                $"a weight part of {value} bytes; expected 1 to {guard.MaxMessageBytes - LayerInputGuard.Headroom} (the message limit less 1 MiB)");
    }

    private int weightPartBytes;

    // Parts of an export or import in flight at once, so that one part's transfer overlaps another's copies.
    private static readonly ParallelOptions PartsInFlight = new() { MaxDegreeOfParallelism = 4 };

    /// <summary>A weight of <paramref name="total"/> bytes cut into parts; an empty one is one empty part, so that an import knows it arrived.</summary>
    private IEnumerable<(string Name, long Offset, int Length)> PartsOf(string name, long total)
    {
        var size = WeightPartBytes;
        if (total == 0) yield return (name, 0, 0);
        for (long offset = 0; offset < total; offset += size)
            yield return (name, offset, (int)Math.Min(size, total - offset));
    }

    private int DefaultWeightPartBytes => (int)Math.Min(16 << 20, guard.MaxMessageBytes - LayerInputGuard.Headroom);

    /// <summary>
    /// The gate and every expert parameter as tensors, named as the reference layer names them, all
    /// of one version: read in parts of at most <see cref="WeightPartBytes"/>, so a layer of any
    /// size comes out. A step that runs meanwhile makes the read fail ("export again").
    /// </summary>
    public async Task<Dictionary<string, Tensor>> GetWeightsAsync()
    {
        var manifest = await Retry(() => router.GetWeightManifest());
        var weights = new Dictionary<string, Tensor>();
        try
        {
            foreach (var w in manifest.Weights) weights.Add(w.Name, empty(w.Shape, TensorWire.ToScalarType(w.DType)));
            var parts = manifest.Weights.SelectMany(w => PartsOf(w.Name, w.ByteLength));
            await Parallel.ForEachAsync(parts, PartsInFlight, async (part, _) =>
            {
                var bytes = await Retry(() => router.ReadWeightPart(manifest.Version, part.Name, part.Offset, part.Length));
                TensorWire.WriteBytes(weights[part.Name], part.Offset, bytes, part.Name);
            });
            return weights;
        }
        catch
        {
            foreach (var t in weights.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Replaces every weight of the layer (names as <see cref="GetWeightsAsync"/> gives them) as the
    /// next step, at a step boundary; the optimizer states start fresh. Returns the new version.
    /// The weights travel in parts of at most <see cref="WeightPartBytes"/>; the layer changes only
    /// when all have arrived, so an import that fails part-way leaves it as it was.
    /// </summary>
    public async Task<long> ImportWeightsAsync(IReadOnlyDictionary<string, Tensor> weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ThrowIfBackwardFailed();
        foreach (var (name, t) in weights)
            if (t.dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
                throw new ArgumentException($"imported tensor \"{name}\" has dtype {t.dtype}; expected Float32, BFloat16 or Float16", nameof(weights));
        var importId = Guid.NewGuid();
        var infos = weights.Select(w => new WeightInfo(w.Key, w.Value.shape, TensorWire.ToTensorDType(w.Value.dtype))).ToArray();
        await Retry(async () => { await router.BeginImport(importId, infos); return true; });
        // Each weight as a contiguous CPU tensor once (the same tensor when it already is one),
        // rather than a copy for each of its parts.
        Dictionary<string, Tensor> sources;
        using (NewDisposeScope()) // frees the detached views in between
            sources = weights.ToDictionary(w => w.Key, w => w.Value.detach().to(CPU).contiguous().MoveToOuterDisposeScope());
        try
        {
            var parts = weights.SelectMany(w => PartsOf(w.Key, w.Value.NumberOfElements * w.Value.element_size()));
            await Parallel.ForEachAsync(parts, PartsInFlight, async (part, _) =>
            {
                var bytes = TensorWire.ReadBytes(sources[part.Name], part.Offset, part.Length, part.Name);
                await Retry(async () => { await router.WriteImportPart(importId, part.Name, part.Offset, bytes); return true; });
            });
        }
        finally
        {
            foreach (var source in sources.Values) source.Dispose();
        }
        var v = await Retry(() => router.CommitImport(importId));
        version = v;
        log.ForgetThrough(v - 1);
        return v;
    }

    /// <summary>Deletes the layer, its experts and its checkpoints.</summary>
    public Task DeleteAsync() => router.Delete();
}
