using Orleans.Concurrency;

namespace MoeCluster;

/// <summary>
/// The router of one MoE layer, keyed by the layer's name. It owns the gate, sends each expert
/// only its tokens (all experts in parallel), combines what comes back, and drives the layer's
/// backward and optimizer steps. Micro-batches with different ids may be in flight at once.
/// </summary>
public interface IMoeRouterGrain : IGrainWithStringKey
{
    /// <summary>
    /// Creates the layer: validates the spec, checks that the cluster has a free device slot per
    /// expert, and activates every expert. Repeating it with the same spec is a no-op; with a
    /// different spec it fails.
    /// </summary>
    Task<LayerStats> Create(LayerSpec spec);

    /// <summary>The layer's spec, or null when the layer was never created.</summary>
    [AlwaysInterleave]
    Task<LayerSpec?> GetSpec();

    /// <summary>
    /// y for x = [T, d_model]. With <paramref name="train"/>, keeps what backward needs under <paramref name="batchId"/>.
    /// With <paramref name="labels"/>, counts them per expert for <see cref="GetSpecialization"/>.
    /// <paramref name="epoch"/>: the router activation (<see cref="GetEpoch"/>) the caller trains
    /// the step with; another one refuses a training forward with <see cref="RouterStateLostException"/>,
    /// so that a forward sent to a router lost with its silo, and delivered to its successor after
    /// the caller recovered and replayed the batch, cannot leave a second copy awaiting a backward.
    /// Null skips the check.
    /// </summary>
    Task<LayerForwardResult> Forward(long batchId, TensorPayload x, bool train, TokenLabels? labels = null, string? epoch = null);

    /// <summary>∂L/∂x for ∂L/∂y = <paramref name="dy"/> and ∂L/∂aux = <paramref name="auxGrad"/>; gradients accumulate until <see cref="Step"/>.</summary>
    Task<TensorPayload> Backward(long batchId, TensorPayload dy, double auxGrad);

    /// <summary>
    /// Applies step <paramref name="stepId"/> (= version + 1) to the gate and every expert and
    /// returns the new version, and the newest version whose checkpoints are all durable. A step
    /// already applied is ignored (the call is safe to repeat); a step further ahead is an error.
    /// <paramref name="epoch"/>: the router activation (<see cref="GetEpoch"/>) the caller ran the
    /// step's micro-batches on; another one lost them with its silo and refuses the step with
    /// <see cref="RouterStateLostException"/>. Null skips the check.
    /// </summary>
    Task<StepResult> Step(long stepId, string? epoch = null);

    /// <summary>
    /// Returns once every applied checkpoint step is durable (a step's checkpoints are written
    /// while the next micro-batches run), writing again what failed; returns the durable version.
    /// Throws <see cref="CheckpointWriteException"/> when the store cannot take them.
    /// </summary>
    Task<long> Flush();

    /// <summary>
    /// After a failure (a lost silo): brings the router and every expert back to the layer's
    /// newest durable version, with no gradients and no micro-batch in flight, reactivating lost
    /// experts from their checkpoints. Returns that version; the caller replays what came after.
    /// With <paramref name="target"/>: to that older durable version instead, one the store still
    /// holds (it keeps two per key), as a trainer resuming from its own checkpoint of that step
    /// asks; a newer one than the durable version is refused.
    /// </summary>
    Task<long> Recover(long? target = null);

    /// <summary>Identifies this activation of the router: it changes when the router is reactivated (its silo was lost).</summary>
    [AlwaysInterleave]
    Task<string> GetEpoch();

    /// <summary>
    /// Begins import <paramref name="importId"/>, which replaces every weight of the layer (the
    /// names and shapes of <see cref="GetWeightManifest"/>; another dtype is converted) as the next
    /// step. The bytes follow in parts (<see cref="WriteImportPart"/>) and
    /// <see cref="CommitImport"/> applies them; optimizer states start fresh. One import at a time:
    /// a new one abandons one in progress. Repeating the call changes nothing.
    /// </summary>
    Task BeginImport(Guid importId, WeightInfo[] weights);

    /// <summary>
    /// Bytes <paramref name="offset"/>.. of weight <paramref name="name"/> for import
    /// <paramref name="importId"/>; the expert that holds the weight keeps them until the commit.
    /// Parts may come in any order; the same part sent again replaces itself.
    /// </summary>
    Task WriteImportPart(Guid importId, string name, long offset, byte[] data);

    /// <summary>
    /// Applies import <paramref name="importId"/> as the next step, at a step boundary, once every
    /// byte of every weight has arrived, and returns the new version (again for a repeat).
    /// </summary>
    Task<long> CommitImport(Guid importId);

    /// <summary>
    /// Whether import <paramref name="importId"/> is still in progress here: an expert whose staged
    /// parts have waited long asks before it frees them (its own parts may have come long before
    /// the rest of a large import).
    /// </summary>
    [AlwaysInterleave]
    Task<bool> IsImporting(Guid importId);

    /// <summary>
    /// Sets what the next steps train and how fast (see <see cref="TrainingControls"/>), at a step
    /// boundary: refused while a training micro-batch is in flight. Kept in the router's checkpoints.
    /// </summary>
    Task SetTrainingControls(TrainingControls controls);

    [AlwaysInterleave]
    Task<TrainingControls> GetTrainingControls();

    /// <summary>
    /// Adds <paramref name="count"/> experts with fresh ids (one more than the highest id ever
    /// used), fresh or split from a live expert (<see cref="ExpertInit"/>), at a step boundary:
    /// refused once a training micro-batch of the coming step has run. The gate and its optimizer
    /// state grow by one column per expert. <paramref name="changeNumber"/>: null for a new change;
    /// the number an earlier answer gave, to apply it again after a recovery (a change the layer
    /// already holds is not applied twice).
    /// </summary>
    Task<ExpertSetChange> AddExperts(int count, ExpertInit init, long? changeNumber = null);

    /// <summary>Removes the experts with these ids at a step boundary; the gate loses their columns. Other experts keep their ids.</summary>
    Task<ExpertSetChange> RemoveExperts(int[] ids, long? changeNumber = null);

    /// <summary>
    /// The layer's experts by id in gate-column order (0..E−1 until experts are added or removed),
    /// with the number of the newest change (<see cref="ExpertSetChange.Added"/> and Removed empty).
    /// </summary>
    [AlwaysInterleave]
    Task<ExpertSetChange> GetExpertSet();

    /// <summary>
    /// Moves expert <paramref name="id"/> live to the silo named <paramref name="silo"/> (as
    /// <see cref="ExpertPlacement.Silo"/> names it), at a step boundary: refused while a step has
    /// micro-batches on it. Weights, optimizer state and version travel with it; the layer's
    /// results do not change. Returns the move, which the layer's stats also list.
    /// </summary>
    Task<ExpertMove> MoveExpert(int id, string silo);

    /// <summary>
    /// Moves experts of this layer live, at a step boundary, until the cluster's device slots are
    /// evenly used (what the router does by itself at the end of a step after a silo joined).
    /// Refused while a step has micro-batches on the layer. Returns the moves made.
    /// </summary>
    Task<ExpertMove[]> SpreadExperts();

    /// <summary>
    /// Gives expert <paramref name="id"/> <paramref name="count"/> more read-only replicas on other
    /// device slots (other silos first), at a step boundary. Inference forwards split the expert's
    /// rows between it and its replicas (outputs do not change); training uses the expert alone;
    /// every step loads the replicas with the new weights before it returns, and a replica serves
    /// only the version it holds. Returns every replica of the expert. A call repeated with the
    /// same <paramref name="requestId"/> (a retry whose first answer was lost) adds none: it
    /// returns the replicas as they are.
    /// </summary>
    Task<ExpertReplica[]> ReplicateExpert(int id, int count, Guid requestId);

    /// <summary>Removes every replica of expert <paramref name="id"/>; returns how many there were.</summary>
    Task<int> RemoveReplicas(int id);

    /// <summary>Deletes the layer: its experts, its checkpoints, and the router's state.</summary>
    Task Delete();

    /// <summary>Frees the saved state of a training forward whose backward will not come.</summary>
    Task Discard(long batchId);

    /// <summary>Optimizer steps applied to the layer.</summary>
    [AlwaysInterleave]
    Task<long> GetVersion();

    [AlwaysInterleave]
    Task<LayerStats> GetStats();

    /// <summary>TorchSharp tensors alive in the router's silo process after a full garbage collection (see <see cref="IMoeExpertGrain.CountSiloLiveTensors"/>).</summary>
    [AlwaysInterleave]
    Task<long> CountSiloLiveTensors();

    /// <summary>Per expert, the classes and token ids of the labelled forwards it admitted, their entropy, and its drop share.</summary>
    [AlwaysInterleave]
    Task<SpecializationReport> GetSpecialization();

    /// <summary>Starts the specialization report over (e.g. to look at a trained layer on fresh tokens only).</summary>
    Task ResetSpecialization();

    /// <summary>
    /// The gate and every expert parameter (named as the reference layer names them, with shapes
    /// and dtypes) and the version they are at; <see cref="ReadWeightPart"/> reads their bytes.
    /// </summary>
    Task<WeightManifest> GetWeightManifest();

    /// <summary>
    /// <paramref name="length"/> bytes from <paramref name="offset"/> of weight <paramref name="name"/>
    /// at <paramref name="version"/>: refused once a step (or any change of the weights) has moved
    /// the layer past that version, so the parts of one export are all of one version.
    /// </summary>
    Task<byte[]> ReadWeightPart(long version, string name, long offset, int length);
}
