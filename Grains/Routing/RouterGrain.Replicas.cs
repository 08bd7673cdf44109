using Microsoft.Extensions.Logging;
using Orleans.Runtime.Placement;

namespace MoeCluster.Grains.Routing;

/// <summary>
/// Read-only replicas of hot experts for inference (as DeepSeek's EPLB does): an inference
/// forward splits a replicated expert's rows into contiguous parts, one for the expert and one for
/// each replica, and joins their outputs in order; every part is the same inference arithmetic on
/// the same weights, so the layer's output does not change. Training forwards and backwards go to
/// the expert alone. The rule that keeps replicas fresh: a replica holds one version and is used
/// only by forwards at that version (it refuses any other); the step that makes a new version
/// loads every replica with the new weights before it returns. After a recovery or an import the
/// replicas sit unused until the next step loads them. The router's checkpoint records how many
/// replicas each expert has: a router that comes back from it makes them again at its next step
/// (copies of the old activation that still live are loaded again under the same keys; the others
/// free their slots when idle).
/// </summary>
public sealed partial class RouterGrain
{
    private sealed class Replica(IExpertReplicaGrain grain, long version)
    {
        public IExpertReplicaGrain Grain { get; } = grain;
        public long Version { get; set; } = version;
    }

    // Replica i of expert e is the grain (e, "layer#i"): an expert's replicas are numbered 0..n−1,
    // in its list's order (they are only ever removed all together), so a router that comes back
    // from its checkpoint, which records the counts, finds the copies still alive by name.
    private readonly Dictionary<int, List<Replica>> replicas = new();

    // Requests already carried out, newest last: a retry of one adds nothing. Kept in memory
    // only: a router that comes back has forgotten them, and makes the replica counts of its
    // checkpoint again instead.
    private readonly List<Guid> replicateRequests = [];
    private const int RememberedReplicateRequests = 64;

    // The replica counts of the checkpoint a new activation came back from, still to be made
    // (at its next step, when the experts hold the weights the replicas copy).
    private Dictionary<int, int> replicasToRestore = new();

    /// <summary>Expert id → replicas, as the checkpoint records them.</summary>
    private Dictionary<int, int> ReplicaCounts() =>
        replicas.Where(kv => kv.Value.Count > 0).ToDictionary(kv => kv.Key, kv => kv.Value.Count);

    public async Task<ExpertReplica[]> ReplicateExpert(int id, int count, Guid requestId)
    {
        var (s, _, _) = Ready();
        if (count is < 1 or > 64)
            throw new ArgumentException($"{count} replicas asked for expert {id}; expected 1 to 64");
        await EnsureReconciled();
        using var writing = await weights.WriteAsync();
        if (replicateRequests.Contains(requestId))
        {
            logger.LogInformation("Layer {Layer}: replication request {Request} for expert {Expert} was already carried out; adding none", Layer, requestId, id);
            return await Task.WhenAll((replicas.TryGetValue(id, out var done) ? done : []).Select(r => r.Grain.GetStats()));
        }
        RefuseMidStep($"replicating expert {id}", "replicate it");
        var column = Array.IndexOf(expertIds, id);
        if (column < 0)
            throw new ArgumentException($"expert {id} cannot be replicated: layer \"{Layer}\" has experts {Training.ExpertSetPlan.Describe(expertIds)}");
        var (list, silos) = await AddReplicas(s, id, column, count);
        replicateRequests.Add(requestId);
        if (replicateRequests.Count > RememberedReplicateRequests) replicateRequests.RemoveAt(0);
        logger.LogInformation("Layer {Layer}: expert {Expert} has {Count} read-only replica(s) at version {Version} on {Silos}",
            Layer, id, list.Count, version, string.Join(", ", silos));
        return await Task.WhenAll(list.Select(r => r.Grain.GetStats()));
    }

    /// <summary>
    /// Loads <paramref name="count"/> more replicas of the expert in gate column
    /// <paramref name="column"/> with its state at the current version (write side held).
    /// </summary>
    /// <param name="restoring">
    /// Reloading the replicas a checkpoint records: copies that outlived the router keep the slots
    /// they hold and are reloaded where they are, so no free slot is asked for beforehand (one
    /// that must be made anew fails alone, when no slot is left for it).
    /// </param>
    /// <returns>All the expert's replicas, and the silos of the new ones.</returns>
    private async Task<(List<Replica> All, List<string> NewSilos)> AddReplicas(LayerSpec s, int id, int column, int count, bool restoring = false)
    {
        var live = slots.LiveSilos();
        if (!restoring)
            await GrainFactory.GetGrain<IDeviceSlotRegistryGrain>(0).EnsureFree(count, $"{count} replica(s) of expert {Layer}/{id}", live);
        var usage = await GrainFactory.GetGrain<IDeviceSlotRegistryGrain>(0).GetUsage(live);
        var free = usage.GroupBy(u => u.Silo).ToDictionary(g => g.Key, g => g.Sum(u => u.Capacity - u.Leased));
        var list = replicas.TryGetValue(id, out var known) ? known : replicas[id] = [];
        // Away from the expert and its other replicas first, so that their load lands elsewhere.
        var busy = new List<string> { (await experts[column].GetStats()).Placement.Silo };
        busy.AddRange((await Task.WhenAll(list.Select(r => r.Grain.GetStats()))).Select(r => r.Placement.Silo));
        var state = await experts[column].ExportState(version);
        var at = version;
        var added = new List<string>();
        for (int i = 0; i < count; i++)
        {
            var target = free.Where(f => f.Value > 0).OrderBy(f => busy.Count(b => b == f.Key)).ThenByDescending(f => f.Value)
                .ThenBy(f => f.Key, StringComparer.Ordinal).Select(f => f.Key).FirstOrDefault();
            var grain = GrainFactory.GetGrain<IExpertReplicaGrain>(id, $"{Layer}#{list.Count}");
            var hint = live.FirstOrDefault(l => l.Silo.ToString() == target)?.Silo;
            if (hint is not null) RequestContext.Set(IPlacementDirector.PlacementHintKey, hint);
            ExpertPlacement placed;
            try { placed = await grain.Load(s, state, at); }
            finally { RequestContext.Remove(IPlacementDirector.PlacementHintKey); }
            list.Add(new Replica(grain, at));
            busy.Add(placed.Silo);
            added.Add(placed.Silo);
            if (free.ContainsKey(placed.Silo)) free[placed.Silo]--;
        }
        return (list, added);
    }

    /// <summary>
    /// At the end of the first step of a router that came back from its checkpoint (write side
    /// held): makes the replicas the checkpoint records, reloading by name those that outlived the
    /// old activation. One that cannot be made (no free slot, the expert removed) is logged and
    /// left out, with those after it; the step stands either way.
    /// </summary>
    private async Task RestoreReplicas()
    {
        if (replicasToRestore.Count == 0) return;
        var (s, _, _) = Ready();
        var wanted = replicasToRestore;
        replicasToRestore = new();
        foreach (var (id, count) in wanted.OrderBy(w => w.Key))
        {
            var column = Array.IndexOf(expertIds, id);
            var missing = count - (replicas.TryGetValue(id, out var have) ? have.Count : 0);
            if (column < 0 || missing <= 0) continue;
            try
            {
                var (all, silos) = await AddReplicas(s, id, column, missing, restoring: true);
                logger.LogInformation("Layer {Layer}: expert {Expert}'s {Count} read-only replica(s) made again at version {Version} on {Silos}, as the checkpoint records",
                    Layer, id, all.Count, version, string.Join(", ", silos));
            }
            catch (Exception e)
            {
                logger.LogWarning("Layer {Layer}: the {Count} replica(s) of expert {Expert} the checkpoint records were not made again: {Error}", Layer, missing, id, e.Message);
            }
        }
    }

    public async Task<int> RemoveReplicas(int id)
    {
        Ready();
        using var writing = await weights.WriteAsync(); // no inference forward is using them
        if (!replicas.Remove(id, out var list)) return 0;
        await Task.WhenAll(list.Select(r => r.Grain.Delete()));
        logger.LogInformation("Layer {Layer}: expert {Expert}'s {Count} replica(s) removed", Layer, id, list.Count);
        return list.Count;
    }

    /// <summary>At the end of a step (write side held): loads every replica with its expert's new weights.</summary>
    private async Task RefreshReplicas()
    {
        await RestoreReplicas(); // made at this step's version: nothing more to load
        if (replicas.Count == 0) return;
        var (s, _, _) = Ready();
        var at = version;
        foreach (var (id, list) in replicas.ToList())
        {
            var column = Array.IndexOf(expertIds, id);
            if (column < 0)
            {
                replicas.Remove(id); // the expert was removed: so are its replicas
                await Task.WhenAll(list.Select(r => r.Grain.Delete()));
                continue;
            }
            try
            {
                var state = await experts[column].ExportState(at);
                await Task.WhenAll(list.Select(async r =>
                {
                    await r.Grain.Load(s, state, at);
                    r.Version = at;
                }));
            }
            catch (Exception e)
            {
                // Those not loaded keep their older version, so forwards at this one do not use them.
                logger.LogWarning("Layer {Layer}: replicas of expert {Expert} were not all loaded with version {Version}: {Error}", Layer, id, at, e.Message);
            }
        }
    }

    private async Task DeleteReplicas()
    {
        var all = replicas.Values.SelectMany(l => l).ToList();
        replicas.Clear();
        await Task.WhenAll(all.Select(r => r.Grain.Delete()));
    }

    private async Task<ExpertReplica[]> ReplicaStats() =>
        await Task.WhenAll(replicas.Values.SelectMany(l => l).Select(r => r.Grain.GetStats()));

    /// <summary>
    /// An inference forward of gate column <paramref name="column"/>: the expert alone, or with
    /// replicas at <paramref name="at"/>, contiguous parts of the rows on each, joined in order.
    /// </summary>
    private Task<ExpertOutput> InferenceForward(int column, IMoeExpertGrain expert, long batchId, TensorPayload input, long at)
    {
        var usable = replicas.TryGetValue(expertIds[column], out var list) ? list.Where(r => r.Version == at).ToArray() : [];
        var rows = input.Shape[0];
        if (usable.Length == 0 || rows < 2) return UndeliveredRetry.Call(() => expert.Forward(batchId, input, false, at, null));
        return SplitForward(expertIds[column], expert, usable, batchId, input, at);
    }

    private async Task<ExpertOutput> SplitForward(int id, IMoeExpertGrain expert, Replica[] usable, long batchId, TensorPayload input, long at)
    {
        var rows = input.Shape[0];
        var parts = (int)Math.Min(rows, usable.Length + 1);
        var rowBytes = input.Data.Length / rows;
        var chunks = new TensorPayload[parts];
        long start = 0;
        for (int p = 0; p < parts; p++)
        {
            var n = rows / parts + (p < rows % parts ? 1 : 0);
            chunks[p] = new TensorPayload([n, input.Shape[1]], input.DType, input.Data.AsSpan((int)(start * rowBytes), (int)(n * rowBytes)).ToArray());
            start += n;
        }
        var own = UndeliveredRetry.Call(() => expert.Forward(batchId, chunks[0], false, at, null));
        var others = Enumerable.Range(1, parts - 1).Select(p => ReplicaOrExpert(id, usable[p - 1], expert, batchId, chunks[p], at)).ToArray();
        var first = await own;
        var outputs = new[] { first.Value }.Concat(await Task.WhenAll(others)).ToArray();
        var joined = new byte[outputs.Sum(o => o.Data.LongLength)];
        long offset = 0;
        foreach (var o in outputs)
        {
            o.Data.CopyTo(joined, offset);
            offset += o.Data.LongLength;
        }
        return new ExpertOutput(new TensorPayload([rows, first.Value.Shape[1]], first.Value.DType, joined), first.Incarnation);
    }

    /// <summary>
    /// A replica's part of the rows, or the expert's computation of it when the replica cannot
    /// answer: its silo was lost, or it came back empty. Replicas are not durable, so that is no
    /// error of the caller's forward; the replica is left out until the next step loads it again.
    /// </summary>
    private async Task<TensorPayload> ReplicaOrExpert(int id, Replica replica, IMoeExpertGrain expert, long batchId, TensorPayload rows, long at)
    {
        try
        {
            return await UndeliveredRetry.Call(() => replica.Grain.Forward(rows, at));
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            if (replica.Version == at)
            {
                replica.Version = -1;
                logger.LogWarning("Layer {Layer}: a replica of expert {Expert} failed an inference forward ({Error}); the expert computes its rows until the next step loads it again",
                    Layer, id, e.Message);
            }
            return (await UndeliveredRetry.Call(() => expert.Forward(batchId, rows, false, at, null))).Value;
        }
    }
}
