using Microsoft.Extensions.Logging;
using MoeCluster.Grains.Checkpoints;
using MoeCluster.Grains.Compute;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Placement;
using MoeCluster.Grains.Training;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Experts;

/// <summary>
/// A read-only replica of an expert (see <see cref="IExpertReplicaGrain"/>). It leases a device
/// slot like an expert, holds the weights without optimizer state or gradients, and computes the
/// same inference forward as the expert (the same <see cref="ExpertComputation"/>), so its rows
/// come out as the expert's would. Not durable: a lost replica is simply not used again until its
/// router loads it again. Unlike an expert it is not kept alive: Orleans collects it when idle,
/// which also frees the slot of a copy that no router knows of any more (one made after the
/// router's newest checkpoint, when the router was then lost); one collected while its router
/// still counts on it comes back empty, and the router has the expert compute its rows until the
/// next step loads it again.
/// </summary>
[DeviceSlotPlacement]
public sealed class ExpertReplicaGrain(
    ComputeQueues queues,
    IClusterSlotView slots,
    ILogger<ExpertReplicaGrain> logger) : Grain, IExpertReplicaGrain
{

    private int expertId, replica;
    private string layer = "";
    private string device = "cpu";
    private ComputeQueue queue = null!;
    private LayerSpec? spec;
    private ExpertComputation? expert;
    private long version = -1;
    private long tokensProcessed;

    private string Name => $"{layer}/{expertId} (replica {replica})";
    private ExpertPlacement Placement => new(slots.Local.Silo.ToString(), device);

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        expertId = (int)this.GetPrimaryKeyLong(out var extension);
        var hash = extension?.LastIndexOf('#') ?? -1;
        if (hash <= 0 || !int.TryParse(extension![(hash + 1)..], out replica))
            throw new InvalidOperationException($"a replica's key needs \"layer#replica\" as its extension; got \"{extension}\"");
        layer = extension[..hash];
        device = await DeviceSlotLease.Claim(this, GrainFactory, slots);
        queue = queues.For(device);
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        await DisposeModel();
        await DeviceSlotLease.Release(this, GrainFactory, slots);
    }

    public async Task<ExpertPlacement> Load(LayerSpec newSpec, byte[] state, long atVersion)
    {
        var record = await Task.Run(() => CheckpointCodec.DecodeTransfer(state, layer));
        if (record.Index != expertId)
            throw new ArgumentException($"replica {Name} was sent the state of expert {layer}/{record.Index}");
        if (expert is null || spec != newSpec)
        {
            await DisposeModel();
            var config = LayerSpecMapping.ToConfig(newSpec);
            var target = new Device(device);
            expert = await queue.RunAsync(() => new ExpertComputation(ExpertFfn.Create(config, 0, target)));
            spec = newSpec;
        }
        var e = expert; var owner = $"replica {Name}";
        await queue.RunAsync(() => ModelState.Restore(e.Ffn.named_parameters(), record.Weights, owner));
        version = atVersion;
        logger.LogDebug("Replica {Replica} on silo {Silo} holds version {Version}", Name, slots.Local.Silo, version);
        return Placement;
    }

    public async Task<TensorPayload> Forward(TensorPayload x, long atVersion)
    {
        if (spec is null || expert is null)
        {
            DeactivateOnIdle(); // an empty copy, called after its silo was lost: it holds no slot until loaded
            throw new InvalidOperationException($"replica {Name} holds no weights; its router loads it first");
        }
        var (s, e) = (spec, expert);
        if (atVersion != version)
            throw new InvalidOperationException($"replica {Name} holds version {version}, not {atVersion}; the router loads it again after a step");
        var y = await queue.RunAsync(() =>
        {
            using var scope = NewDisposeScope();
            var input = TensorWire.FromPayload(x, e.Ffn.Device);
            LayerInputChecks.Input(input, s.DModel);
            return TensorWire.ToPayload(e.Forward(0, input, train: false), s.WireDType);
        });
        tokensProcessed += x.Shape[0];
        return y;
    }

    public async Task Delete()
    {
        await DisposeModel();
        version = -1;
        DeactivateOnIdle();
    }

    public Task<ExpertReplica> GetStats() => Task.FromResult(new ExpertReplica(expertId, replica, Placement, version, tokensProcessed));

    private async Task DisposeModel()
    {
        if (expert is null) return;
        var e = expert;
        expert = null;
        spec = null;
        await queue.RunAsync(e.Dispose);
    }
}
