using Microsoft.Extensions.Logging;
using MoeCluster.Grains.Checkpoints;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Training;

namespace MoeCluster.Grains.Routing;

/// <summary>
/// Export and import of a layer's weights in parts. A layer can be far larger than Orleans'
/// message limit (100 MiB by default; one expert alone can be), so neither direction moves it in
/// one call: an export lists the weights and reads each one's bytes part by part, every part
/// checked against the version the export began at; an import stages parts where the weights live
/// (the gate here, each expert's in its grain) and applies them all as one step at its commit.
/// </summary>
public sealed partial class RouterGrain
{
    // The import whose parts are arriving, with the weights it brings by name.
    private (WeightImportBuffer Gate, Dictionary<string, WeightInfo> Weights)? importing;
    // The last import committed, so that a repeated commit answers its version.
    private (Guid Id, long Version)? lastImport;

    public async Task<WeightManifest> GetWeightManifest()
    {
        var (_, _, r) = Ready();
        using var reading = await weights.ReadAsync();
        return new WeightManifest(version, await CurrentWeights(r));
    }

    public async Task<byte[]> ReadWeightPart(long atVersion, string name, long offset, int length)
    {
        var (_, _, r) = Ready();
        using var reading = await weights.ReadAsync();
        if (atVersion != version)
            throw new InvalidOperationException($"layer \"{Layer}\" is at version {version}; the export reads version {atVersion} (a step ran since); export again");
        if (name == "gate")
            return await queue.RunAsync(() => TensorWire.ReadBytes(r.GateWeight, offset, length, $"the gate of layer \"{Layer}\""));
        return await ExpertHolding(name).ReadWeightPart(atVersion, name, offset, length);
    }

    public async Task BeginImport(Guid importId, WeightInfo[] imported)
    {
        var (_, _, r) = Ready();
        if (lastImport?.Id == importId || importing?.Gate.Id == importId) return;
        await EnsureReconciled();
        using var reading = await weights.ReadAsync();
        var expected = (await CurrentWeights(r)).ToDictionary(w => w.Name);
        var byName = new Dictionary<string, WeightInfo>();
        foreach (var w in imported)
        {
            if (!expected.TryGetValue(w.Name, out var like))
                throw new ArgumentException($"imported tensor \"{w.Name}\" is not a weight of layer \"{Layer}\"; expected gate and experts.{{id}}.* for ids {ExpertSetPlan.Describe(expertIds)}");
            if (!w.Shape.SequenceEqual(like.Shape))
                throw new ArgumentException($"imported tensor \"{w.Name}\" has shape [{string.Join(", ", w.Shape)}]; expected [{string.Join(", ", like.Shape)}]");
            TensorPayload.ElementSize(w.DType); // an unknown dtype is refused here, before any part
            if (!byName.TryAdd(w.Name, w))
                throw new ArgumentException($"imported tensor \"{w.Name}\" appears twice");
        }
        var missing = expected.Keys.Where(k => !byName.ContainsKey(k)).Order().ToList();
        if (missing.Count > 0)
            throw new ArgumentException($"the import lacks {missing.Count} weight(s) of layer \"{Layer}\": {string.Join(", ", missing.Take(8))}");
        if (importing is { } abandoned)
            logger.LogWarning("Layer {Layer}: import {New} begins; import {Old} is abandoned", Layer, importId, abandoned.Gate.Id);
        importing = (new WeightImportBuffer(importId, $"the router of layer \"{Layer}\""), byName);
        logger.LogInformation("Layer {Layer}: import {Import} of {Count} weight tensors ({Bytes} bytes) begins",
            Layer, importId, byName.Count, byName.Values.Sum(w => w.ByteLength));
    }

    public async Task WriteImportPart(Guid importId, string name, long offset, byte[] data)
    {
        Ready();
        if (importing is not { } current || current.Gate.Id != importId)
            throw new InvalidOperationException($"import {importId} of layer \"{Layer}\" is not in progress; begin it first (a newer import, a router that came back from its checkpoint, or no part within the layer's SavedForwardTimeout ends it)");
        if (!current.Weights.TryGetValue(name, out var weight))
            throw new ArgumentException($"import {importId} of layer \"{Layer}\" does not bring \"{name}\"");
        current.Gate.Touch(); // the router's buffer dates the import's last part, the experts' included
        if (name == "gate") current.Gate.Write(weight, offset, data);
        else await ExpertHolding(name).StageImportPart(importId, weight, offset, data);
    }

    public async Task<long> CommitImport(Guid importId)
    {
        var (_, _, r) = Ready();
        if (lastImport is { } done && done.Id == importId) return done.Version;
        await EnsureReconciled();
        using var writing = await weights.WriteAsync();
        if (importing is not { } current || current.Gate.Id != importId)
            throw new InvalidOperationException($"import {importId} of layer \"{Layer}\" is not in progress; begin it first (a newer import, a router that came back from its checkpoint, or no part within the layer's SavedForwardTimeout ends it)");
        if (pending.Count > 0)
            throw new InvalidOperationException($"layer \"{Layer}\" has {pending.Count} micro-batch(es) in flight; import weights at a step boundary");
        await CommitSettled();
        // Every part is checked before any weight changes, so an incomplete import changes nothing.
        var gate = current.Gate.Complete([("gate", TensorWire.ToTensorDType(r.GateWeight.dtype))], name => name);
        await Task.WhenAll(experts.Select(e => e.CheckImport(importId)));
        var stepId = version + 1;
        await Task.WhenAll(experts.Select(e => e.CommitImport(stepId, importId)));
        var spec0 = spec!;
        optimizer = await queue.RunAsync(() =>
        {
            optimizer?.Dispose();
            ModelState.Restore([("gate", r.GateWeight)], gate, $"the router of layer \"{Layer}\"");
            ModelState.ZeroGradients([r.GateWeight]);
            return OptimizerFactory.Create(spec0.Optimizer, [r.GateWeight]);
        });
        version = stepId;
        incarnations.Clear();
        backwardAnswers.Clear();
        importing = null;
        lastImport = (importId, stepId);
        await WriteCheckpoint();
        durableVersion = stepId;
        logger.LogInformation("Layer {Layer} imported {Count} weight tensors as version {Version} (import {Import})",
            Layer, current.Weights.Count, version, importId);
        return version;
    }

    public Task<bool> IsImporting(Guid importId) => Task.FromResult(importing?.Gate.Id == importId);

    /// <summary>Ends an import that no part reached within <paramref name="timeout"/> (its client went away); its experts then free their parts.</summary>
    private void ExpireImport(TimeSpan timeout)
    {
        if (importing is not { } abandoned || DateTime.UtcNow - abandoned.Gate.LastWrite <= timeout) return;
        importing = null;
        logger.LogWarning("Layer {Layer}: import {Import} ended: no part came within {Timeout} and it was not committed", Layer, abandoned.Gate.Id, timeout);
    }

    /// <summary>The gate and every expert's parameters, with shapes and dtypes.</summary>
    private async Task<WeightInfo[]> CurrentWeights(TopKRouter r)
    {
        var gate = new WeightInfo("gate", r.GateWeight.shape, TensorWire.ToTensorDType(r.GateWeight.dtype));
        var expertWeights = await Task.WhenAll(experts.Select(e => e.GetWeightInfos()));
        return [gate, .. expertWeights.SelectMany(w => w)];
    }

    /// <summary>The expert grain that holds weight <paramref name="name"/> (<c>experts.{id}.…</c>).</summary>
    private IMoeExpertGrain ExpertHolding(string name)
    {
        var parts = name.Split('.');
        var column = parts.Length == 3 && parts[0] == "experts" && int.TryParse(parts[1], out var id) ? Array.IndexOf(expertIds, id) : -1;
        return column >= 0 ? experts[column]
            : throw new ArgumentException($"layer \"{Layer}\" has no weight \"{name}\"; expected gate and experts.{{id}}.* for ids {ExpertSetPlan.Describe(expertIds)}");
    }
}
