using Orleans.Concurrency;

namespace MoeCluster;

/// <summary>
/// One expert of a layer, keyed by (id, layer name); the id is the expert's for its life, while
/// its gate column may shift as other experts are removed. Its weights and optimizer state live on
/// the device slot it leased on its silo. Called by its layer's router.
/// </summary>
public interface IMoeExpertGrain : IGrainWithIntegerCompoundKey
{
    /// <summary>
    /// Builds the expert's weights from the spec (deterministically from seed, layer and id) at
    /// layer version <paramref name="version"/>, or, with <paramref name="parentState"/> (what
    /// <see cref="ExportState"/> of another expert returned), as a copy of that expert's weights
    /// and optimizer state.
    /// </summary>
    Task<ExpertPlacement> Initialize(LayerSpec spec, long version = 0, byte[]? parentState = null);

    /// <summary>The expert's weights and optimizer state at its version, for a split; refused while it holds gradients or saved forwards.</summary>
    Task<byte[]> ExportState(long layerVersion);

    /// <summary>FFN_e of the rows sent; in training the expert keeps what backward needs.</summary>
    /// <remarks>
    /// <paramref name="layerVersion"/>: the version (steps applied) the router is at. An expert at
    /// another version came back from an older checkpoint (or the router did): it refuses with
    /// <see cref="ExpertStateLostException"/> rather than mix versions.
    /// <paramref name="incarnation"/>: the one this expert answered with earlier in the current step,
    /// or null for its first call of the step. A different one means the expert was lost and came
    /// back from its checkpoint without the step's state: it refuses with <see cref="ExpertStateLostException"/>.
    /// </remarks>
    Task<ExpertOutput> Forward(long batchId, TensorPayload x, bool train, long layerVersion, string? incarnation);

    /// <summary>∂L/∂x_e for ∂L/∂FFN_e(x_e) = <paramref name="outputGrad"/>; parameter gradients accumulate.</summary>
    Task<ExpertOutput> Backward(long batchId, TensorPayload outputGrad, long layerVersion, string? incarnation);

    /// <summary>Frees a saved forward; false when there was none.</summary>
    Task<bool> Discard(long batchId);

    /// <summary>Σ of the squares of every accumulated parameter gradient, for global-norm clipping.</summary>
    Task<double> GradientSquaredNorm(long layerVersion, string? incarnation);

    /// <summary>
    /// Scales the gradients by <paramref name="gradScale"/>, applies the optimizer and clears them.
    /// Idempotent per step id. <paramref name="control"/> sets the step's learning rate, or freezes
    /// the expert (its gradients are cleared, nothing else changes); null: the spec's learning rate.
    /// At a checkpoint step the expert captures its state before it answers and writes it in the
    /// background (or before it answers, with <see cref="LayerSpec.CheckpointBeforeStepReturns"/>);
    /// <see cref="FlushCheckpoint"/> waits for it.
    /// </summary>
    Task<long> Step(long stepId, double gradScale, string? incarnation, ExpertStepControl? control = null);

    /// <summary>
    /// Returns once the checkpoint of <paramref name="version"/> is durable, writing it again if its
    /// background write failed; throws <see cref="CheckpointWriteException"/> if it cannot be written.
    /// Interleaves with forwards: it only waits on the store.
    /// </summary>
    [AlwaysInterleave]
    Task FlushCheckpoint(long version);

    /// <summary>
    /// Brings the expert to <paramref name="version"/> with no accumulated gradient and no saved
    /// forward: it reloads that checkpoint when it is ahead (a step its layer never committed).
    /// Returns the version it is at: lower than asked when its newer checkpoint was corrupt.
    /// </summary>
    Task<long> ResetTo(long version);

    /// <summary>
    /// Keeps a part of import <paramref name="importId"/> of <paramref name="weight"/> (one of this
    /// expert's, named as in <see cref="GetWeightInfos"/>) until <see cref="CommitImport"/>; the
    /// parts of an earlier import are dropped. In memory only: an expert that is reactivated has none.
    /// </summary>
    Task StageImportPart(Guid importId, WeightInfo weight, long offset, byte[] data);

    /// <summary>Throws unless every byte of every weight of import <paramref name="importId"/> has arrived.</summary>
    Task CheckImport(Guid importId);

    /// <summary>
    /// Replaces the weights with import <paramref name="importId"/>'s as step <paramref name="stepId"/>,
    /// with a fresh optimizer state; a step already applied is ignored.
    /// </summary>
    Task<long> CommitImport(long stepId, Guid importId);

    /// <summary>
    /// Leaves this silo (it is shutting down): writes the expert's whole state — weights, optimizer,
    /// the gradients of the current step and the inputs of forwards awaiting their backward — and
    /// deactivates. The next call activates it on another silo, which takes that state over, so
    /// the step goes on with no replay.
    /// </summary>
    Task HandOff();

    /// <summary>
    /// Moves this live expert to <paramref name="target"/>: captures its whole state (as a hand-off
    /// does) and migrates with a placement hint; the next activation, on the target, takes the state
    /// over from the migration with no store round trip. Returns the size of that state in bytes.
    /// </summary>
    Task<long> MigrateTo(SiloAddress target);

    /// <summary>Deletes the expert's checkpoints and deactivates it.</summary>
    Task Delete();

    [AlwaysInterleave]
    Task<ExpertStats> GetStats();

    /// <summary>
    /// TorchSharp tensors alive in this expert's silo process after a full garbage collection (so
    /// tensors only awaiting their finalizer do not count): for leak checks, since it costs a GC.
    /// </summary>
    [AlwaysInterleave]
    Task<long> CountSiloLiveTensors();

    /// <summary>The expert's parameters, named as the reference layer names them (<c>experts.{id}.w1</c>, …), with shapes and dtypes.</summary>
    Task<WeightInfo[]> GetWeightInfos();

    /// <summary><paramref name="length"/> bytes from <paramref name="offset"/> of parameter <paramref name="name"/>, refused unless the expert is at <paramref name="version"/>.</summary>
    Task<byte[]> ReadWeightPart(long version, string name, long offset, int length);
}
