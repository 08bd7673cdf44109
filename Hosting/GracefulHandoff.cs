using Microsoft.Extensions.Logging;
using MoeCluster.Grains.Experts;
using MoeCluster.Grains.Placement;

namespace MoeCluster.Hosting;

/// <summary>
/// On a graceful stop (SIGTERM, Ctrl+C), before Orleans deactivates this silo's grains: marks the
/// silo as draining in the slot registry, so nothing is placed here any more, and has every local
/// expert hand its whole state off (<see cref="IMoeExpertGrain.HandOff"/>). Their next calls
/// activate them on other silos mid-step, with no replay.
/// </summary>
public sealed class GracefulHandoff(
    IGrainFactory grains,
    IClusterSlotView slots,
    LocalExperts experts,
    ILogger<GracefulHandoff> logger) : ILifecycleParticipant<ISiloLifecycle>
{
    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe<GracefulHandoff>(ServiceLifecycleStage.Active, _ => Task.CompletedTask, OnStop);

    private async Task OnStop(CancellationToken cancellationToken)
    {
        var local = experts.All;
        if (local.Count == 0) return;
        logger.LogInformation("Silo {Silo} stopping: handing off {Count} expert(s)", slots.Local.Silo, local.Count);
        try
        {
            await grains.GetGrain<IDeviceSlotRegistryGrain>(0).Drain(slots.Local.Silo);
            await Task.WhenAll(local.Select(e => grains.GetGrain<IMoeExpertGrain>(e.Index, e.Layer).HandOff()))
                .WaitAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The experts that did not hand off come back from their checkpoints, with a replay.
            logger.LogError(e, "Silo {Silo}: handing off experts failed", slots.Local.Silo);
        }
    }
}
