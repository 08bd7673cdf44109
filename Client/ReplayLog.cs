namespace MoeCluster.Client;

/// <summary>
/// What the SDK must be able to send again after a silo is lost: every training micro-batch
/// (x, and ∂y with ∂L/∂aux once its backward ran) of each step that is not yet durable, in the
/// order the forwards were issued and the backwards completed. Replaying it in that order gives
/// the gradients the lost run would have had, accumulated in the same order.
/// </summary>
internal sealed class ReplayLog
{
    internal sealed class Batch(long id, TensorPayload x)
    {
        public long Id { get; } = id;
        public TensorPayload X { get; } = x;
        public string? Epoch { get; set; }
        public TensorPayload? Dy { get; set; }
        public double AuxGrad { get; set; }
        /// <summary>The forward's answer when a replay produced it (the caller's own call failed).</summary>
        public LayerForwardResult? Replayed { get; set; }
    }

    internal sealed class StepLog(long stepId)
    {
        public long StepId { get; } = stepId;
        public List<Batch> Forwards { get; } = [];
        public List<Batch> Backwards { get; } = [];
        public bool Applied { get; set; }
        /// <summary>
        /// What was changed before this step's micro-batches, in order — training controls set, experts
        /// added or removed (<see cref="ExpertSetRequest"/>) — to do again before replaying them.
        /// </summary>
        public List<object> Boundary { get; } = [];
    }

    private readonly SortedDictionary<long, StepLog> steps = new();
    private readonly object gate = new();

    /// <summary>The step the next micro-batches belong to.</summary>
    public StepLog Current(long stepId)
    {
        lock (gate)
        {
            if (!steps.TryGetValue(stepId, out var log)) steps[stepId] = log = new StepLog(stepId);
            return log;
        }
    }

    public Batch AddForward(long stepId, long id, TensorPayload x)
    {
        var batch = new Batch(id, x);
        var log = Current(stepId);
        lock (gate) log.Forwards.Add(batch);
        return batch;
    }

    public Batch? Find(long id)
    {
        lock (gate) return steps.Values.SelectMany(s => s.Forwards).LastOrDefault(b => b.Id == id);
    }

    public void RecordBackward(long stepId, Batch batch)
    {
        var log = Current(stepId);
        lock (gate) log.Backwards.Add(batch);
    }

    public void SetControls(long stepId, TrainingControls controls)
    {
        lock (gate) Current(stepId).Boundary.Add(controls);
    }

    public void RecordExpertChange(long stepId, ExpertSetRequest change)
    {
        lock (gate) Current(stepId).Boundary.Add(change);
    }

    public void MarkApplied(long stepId)
    {
        lock (gate) Current(stepId).Applied = true;
    }

    /// <summary>Forgets what a durable version covers: it can no longer be lost.</summary>
    public void ForgetThrough(long durableVersion)
    {
        lock (gate)
            foreach (var id in steps.Keys.Where(k => k <= durableVersion).ToList()) steps.Remove(id);
    }

    /// <summary>The steps after <paramref name="durableVersion"/>, oldest first, as copies safe to iterate.</summary>
    public List<(long StepId, bool Applied, List<Batch> Forwards, List<Batch> Backwards, List<object> Boundary)> After(long durableVersion)
    {
        lock (gate)
            return steps.Values.Where(s => s.StepId > durableVersion)
                .Select(s => (s.StepId, s.Applied, s.Forwards.ToList(), s.Backwards.ToList(), s.Boundary.ToList())).ToList();
    }

    /// <summary>Drops a batch that will not come back (discarded by the caller).</summary>
    public void Remove(long id)
    {
        lock (gate)
            foreach (var s in steps.Values)
            {
                s.Forwards.RemoveAll(b => b.Id == id);
                s.Backwards.RemoveAll(b => b.Id == id);
            }
    }
}
