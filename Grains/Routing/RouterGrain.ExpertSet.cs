using Microsoft.Extensions.Logging;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Training;

namespace MoeCluster.Grains.Routing;

/// <summary>
/// Adding and removing experts while a layer trains (DESIGN.md, Elasticity). A change happens at
/// a step boundary, before any micro-batch of the coming step: the new experts initialise first
/// (a failure leaves the layer as it was), then the gate and its optimizer state gain or lose
/// columns under the write side of the weights gate. When the current version has a durable
/// router checkpoint, that checkpoint is written again with the new experts; otherwise the
/// change is durable with the next checkpoint step, and a recovery before then replays it.
/// </summary>
public sealed partial class RouterGrain
{
    public Task<ExpertSetChange> AddExperts(int count, ExpertInit init, long? changeNumber) =>
        ChangeExperts(changeNumber, $"adding {count} expert(s) ({init})",
            () => ExpertSetPlan.Add(expertIds, nextExpertId, count, init, Layer));

    public Task<ExpertSetChange> RemoveExperts(int[] ids, long? changeNumber) =>
        ChangeExperts(changeNumber, $"removing expert(s) {string.Join(", ", ids ?? [])}",
            () => ExpertSetPlan.Remove(expertIds, nextExpertId, ids!, Layer));

    public Task<ExpertSetChange> GetExpertSet()
    {
        var (s, _, _) = Ready();
        return Task.FromResult(new ExpertSetChange(expertChanges, version, expertIds, [], [], s));
    }

    private async Task<ExpertSetChange> ChangeExperts(long? changeNumber, string what, Func<ExpertSetPlan> planChange)
    {
        var (s, _, _) = Ready();
        await EnsureReconciled();
        using var writing = await weights.WriteAsync();
        if (changeNumber is { } known && known <= expertChanges)
            return new ExpertSetChange(known, version, expertIds, [], [], spec!); // the layer holds it already (a replay)
        if (changeNumber is { } next && next != expertChanges + 1)
            throw new InvalidOperationException(
                $"expert-set change {next} cannot be applied to layer \"{Layer}\": it has had {expertChanges} change(s), so the next is {expertChanges + 1}");
        RefuseMidStep(what, "change the experts");
        await MakeDurable($"{what} is not applied to layer \"{Layer}\"");

        var plan = planChange();
        var newSpec = s with { NumExperts = plan.Ids.Length };
        var newConfig = LayerSpecMapping.ToConfig(newSpec); // refuses, e.g., fewer experts than top-k
        var at = version;
        if (plan.Added.Length > 0)
        {
            await GrainFactory.GetGrain<IDeviceSlotRegistryGrain>(0)
                .EnsureFree(plan.Added.Length, $"{plan.Added.Length} more expert(s) of layer \"{Layer}\"", slots.LiveSilos());
            var parentState = plan.Parent is { } parent ? await experts[Array.IndexOf(expertIds, parent)].ExportState(at) : null;
            await Task.WhenAll(plan.Added.Select(id => GrainFactory.GetGrain<IMoeExpertGrain>(id, Layer).Initialize(newSpec, at, parentState)));
        }

        var r = router!; var o = optimizer!;
        var (dModel, seed, layer, ids) = (s.DModel, s.Seed, Layer, plan.Ids);
        (router, optimizer) = await queue.RunAsync(() =>
        {
            var gate = GateColumns.Reshape(r.GateWeight, plan.Sources, j => GateColumns.Fresh(dModel, LayerSeeds.GateColumn(seed, layer, ids[j])));
            var reshaped = OptimizerColumns.Reshape(o, newSpec.Optimizer, gate, plan.Sources);
            o.Dispose();
            r.Dispose();
            return (new TopKRouter(newConfig, gate), reshaped);
        });
        (spec, config) = (newSpec, newConfig);
        SetExperts(plan.Ids);
        nextExpertId = plan.NextId;
        expertChanges++;
        routedTotals = plan.Sources.Select(j => j >= 0 ? routedTotals[j] : 0).ToArray();
        droppedTotals = plan.Sources.Select(j => j >= 0 ? droppedTotals[j] : 0).ToArray();
        specialization = new SpecializationTally(newConfig.NumExperts);
        controls = WithoutExperts(controls, plan.Removed);
        incarnations.Clear();
        retiring.AddRange(plan.Removed);
        if (durableVersion == version)
        {
            // This version's router checkpoint names the old experts: write it again with the new ones.
            await WriteCheckpoint();
            await RetireRemoved();
        }
        logger.LogInformation("Layer {Layer} at version {Version}: {What}; experts now {Ids} (change {Change})",
            Layer, version, what, ExpertSetPlan.Describe(expertIds), expertChanges);
        return new ExpertSetChange(expertChanges, version, expertIds, plan.Added, plan.Removed, newSpec);
    }

    /// <summary>Throws unless the layer is at a step boundary: no step applied now, and no micro-batch of the coming step has run.</summary>
    private void RefuseMidStep(string what, string instead)
    {
        if (pending.Count > 0 || runningStep is not null || trainedSinceStep)
            throw new InvalidOperationException(
                $"{what} on layer \"{Layer}\" happens at a step boundary, but step {version + 1} has begun: " +
                (runningStep is { } running ? $"step {running.Id} is being applied" : $"{pending.Count} training micro-batch(es) are in flight, and its micro-batches have run") +
                $"; apply step {version + 1} first (or {instead} before its first forward)");
    }

    /// <summary>Training controls that no longer name removed experts.</summary>
    private static TrainingControls WithoutExperts(TrainingControls c, int[] removed) => removed.Length == 0 ? c : c with
    {
        FrozenExperts = c.FrozenExperts.Where(e => !removed.Contains(e)).ToArray(),
        ExpertLearningRateMultipliers = c.ExpertLearningRateMultipliers.Where(m => !removed.Contains(m.Key)).ToDictionary(m => m.Key, m => m.Value),
    };

    /// <summary>Deletes removed experts (their grains, slots and checkpoints) once no durable router checkpoint names them.</summary>
    private async Task RetireRemoved()
    {
        if (retiring.Count == 0) return;
        var gone = retiring.ToArray();
        retiring.Clear();
        try
        {
            await Task.WhenAll(gone.Select(id => GrainFactory.GetGrain<IMoeExpertGrain>(id, Layer).Delete()));
        }
        catch (Exception e)
        {
            logger.LogWarning("Layer {Layer}: removed expert(s) {Ids} could not all be deleted: {Error}", Layer, string.Join(", ", gone), e.Message);
        }
    }
}
