using System.Diagnostics;
using Microsoft.Extensions.Logging;
using MoeCluster.Grains.Compute;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Placement;
using MoeCluster.Grains.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Experts;

/// <summary>
/// One expert of a layer (key: index, layer name). It leases a device slot when it activates,
/// builds its FFN there from (seed, layer, index), and runs its tensor work on that device's
/// compute queue. Not reentrant: calls run one at a time, so a step never overlaps a backward.
/// </summary>
[DeviceSlotPlacement, KeepAlive]
public sealed class ExpertGrain(
    ComputeQueues queues,
    IClusterSlotView slots,
    ILogger<ExpertGrain> logger) : Grain, IMoeExpertGrain
{
    private string layer = "";
    private int index;
    private string device = "cpu";
    private ComputeQueue queue = null!;

    private LayerSpec? spec;
    private ExpertComputation? expert;
    private optim.Optimizer? optimizer;
    private Parameter[] parameters = [];
    private long version;

    private long tokensProcessed, forwardCalls, backwardCalls, expiredForwards;
    private TimeSpan computeTime;

    private string Key => $"{layer}/{index}";

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        index = (int)this.GetPrimaryKeyLong(out var keyExtension);
        layer = keyExtension ?? throw new InvalidOperationException("an expert's key needs the layer name as its extension");
        var registry = GrainFactory.GetGrain<IDeviceSlotRegistryGrain>(0);
        device = await registry.Claim(this.GetGrainId().ToString(), slots.Local, slots.LiveSilos());
        queue = queues.For(device);
        logger.LogInformation("Expert {Expert} placed on silo {Silo}, device {Device}", Key, slots.Local.Silo, device);
    }

    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        if (expert is not null)
        {
            var e = expert; var o = optimizer;
            await queue.RunAsync(() => { o?.Dispose(); e.Dispose(); });
        }
        expert = null;
        await GrainFactory.GetGrain<IDeviceSlotRegistryGrain>(0).Release(this.GetGrainId().ToString(), slots.Local.Silo);
    }

    private ExpertPlacement Placement => new(slots.Local.Silo.ToString(), device);

    public async Task<ExpertPlacement> Initialize(LayerSpec newSpec)
    {
        if (spec is not null)
        {
            if (spec != newSpec)
                throw new ArgumentException($"expert {Key} was already initialised with a different spec; delete the layer before changing its spec");
            return Placement;
        }
        var config = LayerSpecMapping.ToConfig(newSpec);
        if (index < 0 || index >= config.NumExperts)
            throw new ArgumentException($"expert index {index} is out of range; layer \"{layer}\" has experts 0..{config.NumExperts - 1}");
        var seed = LayerSeeds.Expert(newSpec.Seed, layer, index);
        (expert, optimizer, parameters) = await queue.RunAsync(() =>
        {
            var ffn = ExpertFfn.Create(config, seed, new Device(device));
            var computation = new ExpertComputation(ffn, LayerSpecMapping.BackwardMode(newSpec));
            var ps = ffn.parameters().ToArray();
            return (computation, OptimizerFactory.Create(newSpec.Optimizer, ps), ps);
        });
        spec = newSpec;
        var period = TimeSpan.FromTicks(Math.Max(TimeSpan.FromMilliseconds(100).Ticks, newSpec.SavedForwardTimeout.Ticks / 4));
        this.RegisterGrainTimer(ExpireSavedForwards, new GrainTimerCreationOptions(period, period) { Interleave = true });
        return Placement;
    }

    private async Task ExpireSavedForwards()
    {
        if (expert is null || spec is null || expert.PendingCount == 0) return;
        var e = expert; var timeout = spec.SavedForwardTimeout;
        var freed = await queue.RunAsync(() => e.DiscardOlderThan(timeout));
        if (freed > 0)
        {
            expiredForwards += freed;
            logger.LogWarning("Expert {Expert} freed {Count} saved forward(s) whose backward did not come within {Timeout}", Key, freed, timeout);
        }
    }

    private (LayerSpec Spec, ExpertComputation Expert) Ready() =>
        spec is not null && expert is not null ? (spec, expert)
        : throw new InvalidOperationException($"expert {Key} is not initialised; create layer \"{layer}\" through its router first");

    public async Task<TensorPayload> Forward(long batchId, TensorPayload x, bool train)
    {
        var (s, e) = Ready();
        var (y, elapsed) = await queue.RunTimedAsync(() =>
        {
            using var scope = NewDisposeScope();
            var input = TensorWire.FromPayload(x, e.Ffn.Device);
            LayerInputChecks.Input(input, s.DModel);
            return TensorWire.ToPayload(e.Forward(batchId, input, train), s.WireDType);
        });
        computeTime += elapsed;
        forwardCalls++;
        tokensProcessed += x.Shape[0];
        return y;
    }

    public async Task<TensorPayload> Backward(long batchId, TensorPayload outputGrad)
    {
        var (s, e) = Ready();
        var (dx, elapsed) = await queue.RunTimedAsync(() =>
        {
            using var scope = NewDisposeScope();
            var grad = TensorWire.FromPayload(outputGrad, e.Ffn.Device);
            return TensorWire.ToPayload(e.Backward(batchId, grad), s.WireDType);
        });
        computeTime += elapsed;
        backwardCalls++;
        return dx;
    }

    public async Task<bool> Discard(long batchId)
    {
        var (_, e) = Ready();
        return await queue.RunAsync(() => e.Discard(batchId));
    }

    public async Task<double> GradientSquaredNorm()
    {
        Ready();
        var ps = parameters;
        return await queue.RunAsync(() => OptimizerFactory.GradientSquaredNorm(ps));
    }

    public async Task<long> Step(long stepId, double gradScale)
    {
        Ready();
        if (stepId <= version) return version; // already applied: a repeated call changes nothing
        if (stepId != version + 1)
            throw new InvalidOperationException($"step {stepId} cannot be applied to expert {Key} at version {version}; steps are applied in order, next is {version + 1}");
        if (!double.IsFinite(gradScale) || gradScale <= 0)
            throw new ArgumentException($"gradient scale is {gradScale}; expected a finite number > 0");
        var o = optimizer!; var ps = parameters;
        var watch = Stopwatch.StartNew();
        await queue.RunAsync(() => OptimizerFactory.Step(o, ps, gradScale));
        computeTime += watch.Elapsed;
        version = stepId;
        return version;
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
    });

    public async Task<NamedTensor[]> GetWeights()
    {
        var (_, e) = Ready();
        return await queue.RunAsync(() => e.Ffn.named_parameters()
            .Select(p => new NamedTensor($"experts.{index}.{p.name}", TensorWire.ToPayload(p.parameter)))
            .ToArray());
    }
}
