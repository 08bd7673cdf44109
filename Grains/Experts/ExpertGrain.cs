using System.Buffers;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using MoeCluster.Grains.Checkpoints;
using MoeCluster.Grains.Compute;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Placement;
using MoeCluster.Grains.Training;
using TorchSharp;
using Orleans.Runtime.Placement;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Experts;

/// <summary>
/// One expert of a layer (key: index, layer name). It leases a device slot when it activates,
/// reloads its latest checkpoint if it has one (it was lost with its silo, or moved), or else
/// waits for its router to initialise it from (seed, layer, index). Tensor work runs on the
/// device's compute queue. Not reentrant: calls run one at a time, so a step never overlaps a
/// backward.
/// </summary>
[DeviceSlotPlacement, KeepAlive]
public sealed class ExpertGrain(
    ComputeQueues queues,
    IClusterSlotView slots,
    ICheckpointStore store,
    LocalExperts localExperts,
    ManagedMemoryTrim memoryTrim,
    ILogger<ExpertGrain> logger) : Grain, IMoeExpertGrain, IGrainMigrationParticipant
{
    private const string MigrationStateKey = "moe-expert-state";

    private string layer = "";
    private int index;
    private string device = "cpu";
    private ComputeQueue queue = null!;

    private LayerSpec? spec;
    private ExpertComputation? expert;
    private optim.Optimizer? optimizer;
    private Parameter[] parameters = [];
    private long version;
    // The newest version whose checkpoint is written. Behind version while a checkpoint is being
    // written in the background, or when its write failed: FlushCheckpoint then writes it again.
    private long durableVersion;
    // The newest checkpoint write; steps wait for it, so at most one is in flight.
    private Task checkpointWrite = Task.CompletedTask;
    private IGrainTimer? expiryTimer;

    // Names this expert's in-memory step state (gradients, saved forwards). A new activation that
    // came back from a checkpoint gets a new one; one that took over a hand-off keeps the old.
    private string incarnation = Guid.NewGuid().ToString("N");

    // A live move: the state captured for the migration (old activation), and received with it (new one).
    private byte[]? leaving, arriving;
    // The parts of a weight import that have arrived, until it is committed.
    private WeightImportBuffer? staged;

    private long tokensProcessed, forwardCalls, backwardCalls, expiredForwards;
    private TimeSpan computeTime;
    // Load as moving averages per step (for the rebalancer): the rows and compute time since the
    // last step, folded in at each step. They start over when the expert moves or is restored.
    private readonly LoadAverage load = new();

    private string Name => $"{layer}/{index}";
    private string CheckpointKey => CheckpointCodec.ExpertKey(layer, index);
    private string HandoffKey => CheckpointCodec.HandoffKey(layer, index);

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        index = (int)this.GetPrimaryKeyLong(out var keyExtension);
        layer = keyExtension ?? throw new InvalidOperationException("an expert's key needs the layer name as its extension");
        device = await DeviceSlotLease.Claim(this, GrainFactory, slots);
        // On the CPU a pool of workers: experts compute side by side, each single-threaded (see ComputeQueues).
        queue = queues.ForExperts(device);
        localExperts.Add(index, layer);
        if (arriving is { } moved)
        {
            arriving = null;
            await TakeOverMigration(moved);
            return;
        }
        var versions = await store.ListVersionsAsync(CheckpointKey, cancellationToken);
        if (versions.Length > 0)
        {
            await LoadNewestGood(versions);
            if (await TakeOverHandoff()) return;
            logger.LogInformation("Expert {Expert} placed on silo {Silo}, device {Device}; restored version {Version} from its checkpoint",
                Name, slots.Local.Silo, device, version);
        }
        else
        {
            logger.LogInformation("Expert {Expert} placed on silo {Silo}, device {Device}", Name, slots.Local.Silo, device);
        }
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        await CheckpointWriteSettled();
        localExperts.Remove(index, layer);
        await DisposeModel();
        await DeviceSlotLease.Release(this, GrainFactory, slots);
    }

    private ExpertPlacement Placement => new(slots.Local.Silo.ToString(), device);

    public async Task<ExpertPlacement> Initialize(LayerSpec newSpec, long atVersion, byte[]? parentState)
    {
        if (spec is not null && !SameExpert(spec, newSpec))
            throw new ArgumentException($"expert {Name} was already initialised with a different spec; delete the layer before changing its spec");
        if (index < 0)
            throw new ArgumentException($"expert id {index} is not valid; expected an id ≥ 0");
        if (atVersion < 0)
            throw new ArgumentException($"expert {Name} cannot start at version {atVersion}; expected a version ≥ 0");
        // Built again even when it exists: an expert added at a step the layer went back before
        // is added again by the replay, and must start where it started the first time.
        await CheckpointWriteSettled();
        await DisposeModel();
        await BuildModel(newSpec);
        if (parentState is not null)
        {
            var record = CheckpointCodec.DecodeTransfer(parentState, layer);
            var e = expert!; var o = optimizer!; var owner = $"expert {Name} (a split of expert {layer}/{record.Index})";
            await queue.RunAsync(() =>
            {
                ModelState.Restore(e.Ffn.named_parameters(), record.Weights, owner);
                ModelState.RestoreOptimizer(o, record.OptimizerState, owner);
            });
        }
        version = atVersion;
        incarnation = Guid.NewGuid().ToString("N");
        var written = await WriteCheckpoint(); // so that a lost expert comes back without its router
        // The encoded record, garbage once stored; a new layer's experts write theirs at once.
        await memoryTrim.AfterBurstAsync(written, $"the first checkpoint of expert {Name}");
        return Placement;
    }

    /// <summary>Two specs build the same expert: only the layer's expert count may differ (it changes as experts come and go).</summary>
    private static bool SameExpert(LayerSpec a, LayerSpec b) => a with { NumExperts = b.NumExperts } == b;

    public async Task<byte[]> ExportState(long layerVersion)
    {
        var (_, e) = Ready();
        CheckState(layerVersion, null);
        if (e.PendingCount > 0)
            throw new InvalidOperationException($"expert {Name} has {e.PendingCount} training forward(s) awaiting backward; its state is exported at a step boundary");
        return (await CaptureEncoded()).Bytes;
    }

    private async Task BuildModel(LayerSpec newSpec)
    {
        var config = LayerSpecMapping.ToConfig(newSpec);
        var seed = LayerSeeds.Expert(newSpec.Seed, layer, index);
        var target = new Device(device);
        (expert, optimizer, parameters) = await queue.RunAsync(() =>
        {
            var ffn = ExpertFfn.Create(config, seed, target);
            var computation = new ExpertComputation(ffn, LayerSpecMapping.BackwardMode(newSpec), config.ExpertDropout);
            var ps = ffn.parameters().ToArray();
            return (computation, OptimizerFactory.Create(newSpec.Optimizer, ps), ps);
        });
        spec = newSpec;
        expiryTimer?.Dispose();
        var period = TimeSpan.FromTicks(Math.Max(TimeSpan.FromMilliseconds(100).Ticks, newSpec.SavedForwardTimeout.Ticks / 4));
        expiryTimer = this.RegisterGrainTimer(ExpireSavedForwards, new GrainTimerCreationOptions(period, period) { Interleave = true });
    }

    private async Task DisposeModel()
    {
        if (expert is null) return;
        var e = expert; var o = optimizer;
        expert = null; optimizer = null; parameters = [];
        await queue.RunAsync(() => { o?.Dispose(); e.Dispose(); });
    }

    /// <summary>
    /// Loads the newest checkpoint that reads back intact. A corrupt one is reported and skipped
    /// for the one before; the router then brings the whole layer to the version this expert has.
    /// </summary>
    private async Task LoadNewestGood(long[] versions)
    {
        for (int i = versions.Length - 1; ; i--)
        {
            try
            {
                await LoadCheckpoint(versions[i]);
                durableVersion = version;
                return;
            }
            catch (CheckpointCorruptException e) when (i > 0)
            {
                logger.LogError("Expert {Expert}: {Problem}; using version {Previous} instead", Name, e.Message, versions[i - 1]);
            }
        }
    }

    /// <summary>Loads version <paramref name="target"/> of this expert's checkpoint: spec, weights and optimizer state.</summary>
    private async Task LoadCheckpoint(long target)
    {
        var bytes = await store.ReadAsync(CheckpointKey, target)
            ?? throw new InvalidOperationException($"expert {Name} has no checkpoint of version {target}; the store keeps only the two newest");
        var record = CheckpointCodec.Decode(bytes, CheckpointKey, target, CheckpointRecord.ExpertKind, layer, index);
        var recordSpec = CheckpointCodec.DecodeSpec(record);
        if (spec is null || spec != recordSpec || expert is null)
        {
            await DisposeModel();
            await BuildModel(recordSpec);
        }
        var e = expert!; var o = optimizer!; var owner = $"expert {Name}";
        await queue.RunAsync(() =>
        {
            foreach (var id in e.PendingIds()) e.Discard(id);
            ModelState.Restore(e.Ffn.named_parameters(), record.Weights, owner);
            ModelState.RestoreOptimizer(o, record.OptimizerState, owner);
            ModelState.ZeroGradients(e.Ffn.parameters());
        });
        version = record.Version;
    }

    /// <summary>
    /// This expert's whole state at its current version as a hand-off record: weights, optimizer,
    /// and the step under way (its gradients and the inputs of forwards awaiting their backward).
    /// </summary>
    private Task<CheckpointRecord> CaptureHandoff()
    {
        var (s, e) = Ready();
        var o = optimizer!;
        var at = version;
        var name = incarnation;
        return queue.RunAsync(() => new CheckpointRecord
        {
            Kind = CheckpointRecord.HandoffKind,
            Layer = layer,
            Index = index,
            Version = at,
            SpecJson = CheckpointCodec.EncodeSpec(s),
            Weights = ModelState.Capture(e.Ffn.named_parameters()),
            OptimizerState = ModelState.CaptureOptimizer(o),
            Gradients = ModelState.CaptureGradients(e.Ffn.named_parameters()),
            SavedInputs = e.SavedInputs().Select(p => ModelState.Capture($"{p.BatchId}", p.Input)).ToArray(),
            Incarnation = name,
        });
    }

    /// <summary>
    /// This expert's checkpoint at its current version, encoded on its compute queue straight from
    /// its parameters and optimizer (<see cref="LiveStateEncoder"/>): the same bytes as its state
    /// captured and then encoded, without the captured copy.
    /// </summary>
    private Task<(long Version, byte[] Bytes)> CaptureEncoded()
    {
        var (s, e) = Ready();
        var o = optimizer!;
        var at = version;
        return queue.RunAsync(() =>
        {
            var header = new CheckpointRecord
            {
                Kind = CheckpointRecord.ExpertKind,
                Layer = layer,
                Index = index,
                Version = at,
                SpecJson = CheckpointCodec.EncodeSpec(s),
            };
            return (at, LiveStateEncoder.Encode(header, e.Ffn.named_parameters(), o));
        });
    }

    /// <returns>The bytes of the record written.</returns>
    private async Task<long> WriteCheckpoint()
    {
        await CheckpointWriteSettled();
        return await Write(await CaptureEncoded());
    }

    /// <summary>Stores an encoded checkpoint; the durable version advances once it is stored.</summary>
    /// <returns>The bytes of the record written.</returns>
    private async Task<long> Write((long Version, byte[] Bytes) encoded)
    {
        var (at, bytes) = encoded;
        long written;
        try
        {
            await store.WriteAsync(CheckpointKey, at, bytes);
            written = bytes.Length;
        }
        catch (Exception failure) when (failure is not ArgumentException)
        {
            // The store's own exception types need not cross to the caller; its message does.
            throw new CheckpointWriteException($"checkpoint {CheckpointKey} version {at} of expert {Name} could not be written: {failure.Message}");
        }
        if (version == at) durableVersion = at;
        return written;
    }

    /// <summary>Waits for the write in flight, if any; its failure is FlushCheckpoint's to report.</summary>
    private async Task CheckpointWriteSettled()
    {
        try { await checkpointWrite; }
        catch (CheckpointWriteException) { }
    }

    public async Task FlushCheckpoint(long target)
    {
        if (durableVersion >= target) return;
        await CheckpointWriteSettled();
        if (durableVersion >= target) return;
        if (version != target)
            throw new ExpertStateLostException(
                $"expert {Name} cannot make version {target} durable: it is at version {version} (it came back from its checkpoint); the layer must recover");
        // The background write failed (its store was out of reach): write it again, once for all callers.
        if (checkpointWrite.IsCompleted) checkpointWrite = WriteCheckpoint();
        await checkpointWrite;
    }

    private async Task ExpireSavedForwards()
    {
        if (expert is null || spec is null) return;
        if (staged is { } waiting && DateTime.UtcNow - waiting.LastWrite > spec.SavedForwardTimeout)
        {
            // No part for a while: this expert's parts may just have come early in a large import,
            // so the router, which sees every part, says whether the import goes on.
            bool goesOn;
            try { goesOn = await GrainFactory.GetGrain<IMoeRouterGrain>(layer).IsImporting(waiting.Id); }
            catch (Exception error)
            {
                goesOn = true; // the router is out of reach for now: ask again at the next tick
                logger.LogDebug("Expert {Expert} could not ask its router about import {Import}: {Error}", Name, waiting.Id, error.Message);
            }
            if (goesOn) waiting.Touch();
            else if (staged == waiting)
            {
                staged = null;
                logger.LogWarning("Expert {Expert} freed the {Bytes} bytes staged for import {Import}: it was not committed and its router no longer has it",
                    Name, waiting.StagedBytes, waiting.Id);
            }
        }
        if (expert.PendingCount == 0) return;
        var e = expert; var timeout = spec.SavedForwardTimeout;
        var freed = await queue.RunAsync(() => e.DiscardOlderThan(timeout));
        if (freed > 0)
        {
            expiredForwards += freed;
            logger.LogWarning("Expert {Expert} freed {Count} saved forward(s) whose backward did not come within {Timeout}", Name, freed, timeout);
        }
    }

    private (LayerSpec Spec, ExpertComputation Expert) Ready() =>
        spec is not null && expert is not null ? (spec, expert)
        : throw new InvalidOperationException($"expert {Name} is not initialised; create layer \"{layer}\" through its router first");

    /// <summary>Refuses a call meant for another version or incarnation of this expert's state.</summary>
    private void CheckState(long layerVersion, string? expected)
    {
        if (layerVersion != version)
            throw new ExpertStateLostException(version < layerVersion
                ? $"expert {Name} is at version {version}, behind its layer at {layerVersion} (it came back from an older checkpoint); the layer must recover"
                : $"expert {Name} is at version {version}, ahead of its router at {layerVersion}; the layer must recover");
        CheckIncarnation(expected);
    }

    private void CheckIncarnation(string? expected)
    {
        if (expected is not null && expected != incarnation)
            throw new ExpertStateLostException(
                $"expert {Name} lost the state of the current step (it came back from its checkpoint at version {version}); the layer must recover");
    }

    public async Task<ExpertOutput> Forward(long batchId, TensorPayload x, bool train, long layerVersion, string? expected)
    {
        var (s, e) = Ready();
        CheckState(layerVersion, expected);
        var maskSeed = MaskSeed(s, batchId);
        var (y, elapsed) = await queue.RunTimedAsync(() =>
        {
            using var scope = NewDisposeScope();
            var input = TensorWire.FromPayload(x, e.Ffn.Device);
            LayerInputChecks.Input(input, s.DModel);
            return TensorWire.ToPayload(e.Forward(batchId, input, train, maskSeed), s.WireDType);
        });
        computeTime += elapsed;
        forwardCalls++;
        tokensProcessed += x.Shape[0];
        load.Add(x.Shape[0], elapsed);
        return new ExpertOutput(y, incarnation);
    }

    // Training forwards belong to the step after the current version: weights change only at Step.
    private long MaskSeed(LayerSpec s, long batchId) => LayerSeeds.ExpertDropout(s.Seed, layer, version + 1, batchId, index);

    public async Task<ExpertOutput> Backward(long batchId, TensorPayload outputGrad, long layerVersion, string? expected)
    {
        var (s, e) = Ready();
        CheckState(layerVersion, expected);
        var (dx, elapsed) = await queue.RunTimedAsync(() =>
        {
            using var scope = NewDisposeScope();
            var grad = TensorWire.FromPayload(outputGrad, e.Ffn.Device);
            return TensorWire.ToPayload(e.Backward(batchId, grad), s.WireDType);
        });
        computeTime += elapsed;
        backwardCalls++;
        load.Add(0, elapsed);
        return new ExpertOutput(dx, incarnation);
    }

    public async Task<bool> Discard(long batchId)
    {
        var (_, e) = Ready();
        return await queue.RunAsync(() => e.Discard(batchId));
    }

    public async Task<double> GradientSquaredNorm(long layerVersion, string? expected)
    {
        Ready();
        CheckState(layerVersion, expected);
        var ps = parameters;
        return await queue.RunAsync(() => OptimizerFactory.GradientSquaredNorm(ps));
    }

    public async Task<long> Step(long stepId, double gradScale, string? expected, ExpertStepControl? control)
    {
        var (s, _) = Ready();
        if (stepId == version && durableVersion < version && version % s.CheckpointEvery == 0 && s.CheckpointBeforeStepReturns)
        {
            await FlushCheckpoint(version); // applied, but its checkpoint failed: the retry makes it durable
            return version;
        }
        if (stepId <= version) return version; // already applied: a repeated call changes nothing
        if (stepId != version + 1)
            throw new ExpertStateLostException(
                $"step {stepId} cannot be applied to expert {Name} at version {version} (it came back from an older checkpoint); the layer must recover");
        CheckIncarnation(expected);
        if (!double.IsFinite(gradScale) || gradScale <= 0)
            throw new ArgumentException($"gradient scale is {gradScale}; expected a finite number > 0");
        var o = optimizer!; var ps = parameters;
        var learningRate = control?.LearningRate ?? s.Optimizer.LearningRate;
        if (!double.IsFinite(learningRate) || learningRate <= 0)
            throw new ArgumentException($"learning rate is {learningRate}; expected a finite number > 0");
        var watch = Stopwatch.StartNew();
        if (control?.Frozen == true)
            await queue.RunAsync(() => ModelState.ZeroGradients(ps)); // frozen: no update, no decay, no optimizer state advanced
        else
            await queue.RunAsync(() =>
            {
                OptimizerFactory.SetLearningRate(o, learningRate);
                OptimizerFactory.Step(o, ps, gradScale);
            });
        computeTime += watch.Elapsed;
        load.EndStep(); // the optimizer's time is the same for every expert: not load that routing moves
        version = stepId;
        if (version % s.CheckpointEvery == 0)
        {
            // Encoded now, on the compute queue, into bytes of its own: the store writes them while the next step runs.
            await CheckpointWriteSettled();
            var encoded = await CaptureEncoded();
            checkpointWrite = Write(encoded);
            // Either way no layer commits a version that is not durable: the router flushes first.
            if (s.CheckpointBeforeStepReturns) await checkpointWrite;
        }
        return version;
    }

    public async Task<long> ResetTo(long target)
    {
        Ready();
        // Behind the target (its newest checkpoint was corrupt): report it, the router goes back to it.
        if (target > version) return version;
        await CheckpointWriteSettled();
        if (target < version)
        {
            logger.LogWarning("Expert {Expert} rolls back from version {Version} to {Target}: its layer never committed the steps between", Name, version, target);
            await LoadCheckpoint(target);
            durableVersion = version;
            return version;
        }
        var e = expert!; var ps = parameters;
        await queue.RunAsync(() =>
        {
            foreach (var id in e.PendingIds()) e.Discard(id);
            ModelState.ZeroGradients(ps);
        });
        return version;
    }

    public Task StageImportPart(Guid importId, WeightInfo weight, long offset, byte[] data)
    {
        Ready();
        var own = OwnWeights().FirstOrDefault(w => w.Name == weight.Name)
            ?? throw new ArgumentException($"expert {Name} has no weight \"{weight.Name}\"; expected one of {string.Join(", ", OwnWeights().Select(w => w.Name))}");
        if (!own.Shape.SequenceEqual(weight.Shape))
            throw new ArgumentException($"imported tensor \"{weight.Name}\" has shape [{string.Join(", ", weight.Shape)}]; expected [{string.Join(", ", own.Shape)}]");
        if (staged?.Id != importId) staged = new WeightImportBuffer(importId, $"expert {Name}");
        staged.Write(weight, offset, data);
        return Task.CompletedTask;
    }

    public Task CheckImport(Guid importId)
    {
        Ready();
        StagedImport(importId).CheckComplete(OwnWeights().Select(w => w.Name));
        return Task.CompletedTask;
    }

    public async Task<long> CommitImport(long stepId, Guid importId)
    {
        var (s, e) = Ready();
        if (stepId <= version) return version;
        if (stepId != version + 1)
            throw new InvalidOperationException($"import as step {stepId} cannot be applied to expert {Name} at version {version}; next is {version + 1}");
        var prefix = $"experts.{index}.";
        var records = StagedImport(importId).Complete(OwnWeights().Select(w => (w.Name, w.DType)), name => name[prefix.Length..]);
        var owner = $"expert {Name}";
        var ps = parameters;
        var fresh = await queue.RunAsync(() =>
        {
            ModelState.Restore(e.Ffn.named_parameters(), records, owner);
            ModelState.ZeroGradients(ps);
            return OptimizerFactory.Create(s.Optimizer, ps);
        });
        staged = null;
        var old = optimizer;
        optimizer = fresh;
        if (old is not null) await queue.RunAsync(old.Dispose);
        version = stepId;
        await WriteCheckpoint();
        return version;
    }

    private WeightImportBuffer StagedImport(Guid importId) => staged?.Id == importId ? staged
        : throw new InvalidOperationException($"expert {Name} holds no part of import {importId} (it was reactivated since, a newer import began, or no part came within the layer's SavedForwardTimeout); begin the import again");

    /// <summary>The expert's parameters as the layer names them; shapes and dtypes need no compute queue to read.</summary>
    private WeightInfo[] OwnWeights() => Ready().Expert.Ffn.named_parameters()
        .Select(p => new WeightInfo($"experts.{index}.{p.name}", p.parameter.shape, TensorWire.ToTensorDType(p.parameter.dtype)))
        .ToArray();

    public async Task HandOff()
    {
        if (expert is null || spec is null)
        {
            DeactivateOnIdle();
            return;
        }
        await CheckpointWriteSettled();
        var record = await CaptureHandoff();
        var at = record.Version;
        await store.WriteAsync(HandoffKey, at, CheckpointCodec.Encode(record));
        logger.LogInformation("Expert {Expert} hands off from silo {Silo} at version {Version} with {Pending} forward(s) awaiting backward",
            Name, slots.Local.Silo, at, record.SavedInputs.Length);
        DeactivateOnIdle();
    }

    /// <summary>
    /// Takes over the state an expert left when its silo shut down, if there is one: the step
    /// it was in goes on here as if nothing had moved (its saved forwards are recomputed in backward).
    /// </summary>
    private async Task<bool> TakeOverHandoff()
    {
        var versions = await store.ListVersionsAsync(HandoffKey);
        if (versions.Length == 0) return false;
        var at = versions[^1];
        var bytes = await store.ReadAsync(HandoffKey, at);
        await store.DeleteAsync(HandoffKey); // used once: a later reactivation must not go back to it
        if (bytes is null || at < version) return false;
        var record = CheckpointCodec.Decode(bytes, HandoffKey, at, CheckpointRecord.HandoffKind, layer, index);
        await Adopt(record);
        logger.LogInformation("Expert {Expert} taken over on silo {Silo}, device {Device}, at version {Version} with {Pending} forward(s) awaiting backward",
            Name, slots.Local.Silo, device, version, record.SavedInputs.Length);
        MoeCluster.Grains.Telemetry.MoeMetrics.RecordMigration(layer, index);
        return true;
    }

    /// <summary>Makes this activation the expert a hand-off or migration record describes, mid-step state included.</summary>
    private async Task Adopt(CheckpointRecord record)
    {
        var recordSpec = CheckpointCodec.DecodeSpec(record);
        if (spec is null || spec != recordSpec || expert is null)
        {
            await DisposeModel();
            await BuildModel(recordSpec);
        }
        var e = expert!; var o = optimizer!; var owner = $"expert {Name}";
        version = record.Version;
        var s = spec!;
        await queue.RunAsync(() =>
        {
            ModelState.Restore(e.Ffn.named_parameters(), record.Weights, owner);
            ModelState.RestoreOptimizer(o, record.OptimizerState, owner);
            ModelState.RestoreGradients(e.Ffn.named_parameters(), record.Gradients);
            foreach (var saved in record.SavedInputs)
            {
                var batchId = long.Parse(saved.Name, System.Globalization.CultureInfo.InvariantCulture);
                e.AdoptSavedInput(batchId, ModelState.ToTensor(saved), MaskSeed(s, batchId));
            }
        });
        incarnation = record.Incarnation;
    }

    public async Task<long> MigrateTo(SiloAddress target)
    {
        Ready();
        await CheckpointWriteSettled(); // the old activation finishes its write; the new one starts level with the store
        var record = await CaptureHandoff();
        leaving = await Task.Run(() => CheckpointCodec.Encode(record));
        RequestContext.Set(IPlacementDirector.PlacementHintKey, target);
        this.MigrateOnIdle();
        logger.LogInformation("Expert {Expert} moves from silo {Silo} to {Target} at version {Version} ({Bytes} bytes of state)",
            Name, slots.Local.Silo, target, version, leaving.LongLength);
        return leaving.LongLength;
    }

    // Migration participants run synchronously: the state was captured into bytes beforehand.
    void IGrainMigrationParticipant.OnDehydrate(IDehydrationContext context)
    {
        if (leaving is { } state) context.AddBytes(MigrationStateKey, state);
    }

    void IGrainMigrationParticipant.OnRehydrate(IRehydrationContext context)
    {
        if (context.TryGetBytes(MigrationStateKey, out var state)) arriving = state.ToArray();
    }

    private async Task TakeOverMigration(byte[] state)
    {
        await Adopt(CheckpointCodec.DecodeTransfer(state, layer, CheckpointRecord.HandoffKind));
        // Its checkpoints stay where they are: the store is shared by the silos.
        var stored = await store.ListVersionsAsync(CheckpointKey);
        durableVersion = stored.Where(v => v <= version).DefaultIfEmpty(0).Max();
        logger.LogInformation("Expert {Expert} moved to silo {Silo}, device {Device}, at version {Version}", Name, slots.Local.Silo, device, version);
        MoeCluster.Grains.Telemetry.MoeMetrics.RecordMigration(layer, index);
    }

    public async Task Delete()
    {
        await CheckpointWriteSettled();
        await store.DeleteAsync(CheckpointKey);
        await store.DeleteAsync(HandoffKey);
        await DisposeModel();
        spec = null;
        DeactivateOnIdle();
    }

    public Task<ExpertStats> GetStats() => Task.FromResult(new ExpertStats
    {
        Index = index,
        Placement = Placement,
        TokensProcessed = tokensProcessed,
        ForwardCalls = forwardCalls,
        BackwardCalls = backwardCalls,
        ComputeMilliseconds = computeTime.TotalMilliseconds,
        PendingForwards = expert?.PendingCount ?? 0,
        ExpiredForwards = expiredForwards,
        Version = version,
        TokensPerStep = load.TokensPerStep,
        ComputeMillisecondsPerStep = load.ComputeMillisecondsPerStep,
        SiloLiveTensors = torch.Tensor.TotalCount,
    });

    public Task<long> CountSiloLiveTensors() => Task.FromResult(Telemetry.LiveTensors.CountAfterCollection());

    public Task<WeightInfo[]> GetWeightInfos() => Task.FromResult(OwnWeights());

    public async Task<byte[]> ReadWeightPart(long atVersion, string name, long offset, int length)
    {
        var (_, e) = Ready();
        if (atVersion != version)
            throw new InvalidOperationException($"expert {Name} is at version {version}; the export reads version {atVersion} (a step ran since); export again");
        var prefix = $"experts.{index}.";
        var parameter = (name.StartsWith(prefix, StringComparison.Ordinal)
                ? e.Ffn.named_parameters().FirstOrDefault(p => p.name == name[prefix.Length..]).parameter
                : null)
            ?? throw new ArgumentException($"expert {Name} has no weight \"{name}\"; expected one of {string.Join(", ", OwnWeights().Select(w => w.Name))}");
        return await queue.RunAsync(() => TensorWire.ReadBytes(parameter, offset, length, name));
    }
}
