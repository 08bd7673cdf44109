using System.Diagnostics;
using Microsoft.Extensions.Logging;
using MoeCluster.Grains.Placement;

namespace MoeCluster.Grains.Routing;

/// <summary>
/// Live moves of experts between silos. A move happens at a step boundary, under the write side
/// of the weights gate, so no micro-batch of a step is ever open on an expert that leaves: the
/// expert captures its state, migrates with a placement hint, and its next activation takes the
/// state over from the migration itself; the router waits until it answers from the target.
/// <para>
/// Scale-out: the router itself watches the cluster's silos. At the end of every step it applies
/// (under the same write side, with no micro-batch open), if a silo with device slots has joined
/// since the last step, it moves its own experts towards it until slot use is even
/// (<see cref="ExpertSpread"/>), so the step's caller sees the moves as part of the step and the
/// next micro-batches already use the new silo. <see cref="SpreadExperts"/> does the same on request.
/// </para>
/// </summary>
public sealed partial class RouterGrain
{
    private const int MovesKept = 100;
    private static readonly TimeSpan MoveTimeout = TimeSpan.FromSeconds(30);
    private readonly Queue<ExpertMove> moves = new();
    // The silos with device slots the router last spread over; null until the layer exists here.
    private HashSet<SiloAddress>? knownSilos;

    public async Task<ExpertMove> MoveExpert(int id, string silo)
    {
        Ready();
        await EnsureReconciled();
        using var writing = await weights.WriteAsync();
        var what = $"moving expert {id} to silo {silo}";
        RefuseMidStep(what, "move experts");
        var column = Array.IndexOf(expertIds, id);
        if (column < 0)
            throw new ArgumentException($"expert {id} cannot be moved: layer \"{Layer}\" has experts {Training.ExpertSetPlan.Describe(expertIds)}");
        var live = slots.LiveSilos();
        var target = live.FirstOrDefault(s => s.Silo.ToString() == silo)
            ?? throw new ArgumentException($"silo {silo} is not a live silo of the cluster; expected one of {string.Join(", ", live.Select(s => s.Silo.ToString()))}");
        return await Move(column, target.Silo, ExpertMove.Asked);
    }

    public async Task<ExpertMove[]> SpreadExperts()
    {
        Ready();
        await EnsureReconciled();
        using var writing = await weights.WriteAsync();
        RefuseMidStep("spreading experts over the silos", "spread them");
        knownSilos = SilosWithSlots();
        return await Spread();
    }

    private HashSet<SiloAddress> SilosWithSlots() => slots.LiveSilos().Where(s => s.Capacity > 0).Select(s => s.Silo).ToHashSet();

    /// <summary>At the end of a step (write side held, nothing open): spreads the experts when a silo joined since the last look.</summary>
    private async Task SpreadIfSilosJoined()
    {
        var now = SilosWithSlots();
        var before = knownSilos;
        knownSilos = now;
        if (before is null || now.IsSubsetOf(before)) return;
        var joined = string.Join(", ", now.Except(before));
        try
        {
            var done = await Spread();
            if (done.Length > 0)
                logger.LogInformation("Layer {Layer}: silo(s) {Joined} joined; {Count} expert(s) moved at version {Version} to even out slot use",
                    Layer, joined, done.Length, version);
        }
        catch (Exception e)
        {
            // The step is applied either way; the experts that did not move stay where they were.
            logger.LogWarning("Layer {Layer}: spreading experts to the silo(s) {Joined} that joined failed: {Error}", Layer, joined, e.Message);
        }
    }

    private async Task<ExpertMove[]> Spread()
    {
        var live = slots.LiveSilos();
        var usage = await GrainFactory.GetGrain<IDeviceSlotRegistryGrain>(0).GetUsage(live);
        var stats = await Task.WhenAll(experts.Select(e => e.GetStats()));
        var plan = ExpertSpread.Plan(usage, stats.ToDictionary(s => s.Index, s => s.Placement.Silo));
        var done = new List<ExpertMove>();
        foreach (var (id, to) in plan)
        {
            var target = live.FirstOrDefault(s => s.Silo.ToString() == to);
            if (target is null) break;
            done.Add(await Move(Array.IndexOf(expertIds, id), target.Silo, ExpertMove.Spread));
        }
        return done.ToArray();
    }

    /// <summary>Moves the expert of gate column <paramref name="column"/>; the caller holds the write side at a step boundary.</summary>
    private async Task<ExpertMove> Move(int column, SiloAddress target, string reason)
    {
        var (id, silo) = (expertIds[column], target.ToString());
        var expert = experts[column];
        var from = (await expert.GetStats()).Placement.Silo;
        if (from == silo) return new ExpertMove(id, from, silo, 0, 0, version, reason);

        var watch = Stopwatch.StartNew();
        var bytes = await expert.MigrateTo(target);
        // Calls that reach the expert while it moves wait for its new activation.
        string now;
        while ((now = (await expert.GetStats()).Placement.Silo) == from && watch.Elapsed < MoveTimeout) await Task.Delay(10);
        if (now != silo)
            throw new InvalidOperationException($"moving expert {id} to silo {silo}: it is on silo {now} after {watch.Elapsed.TotalSeconds:F1} s (the target had no free slot, or the move did not finish)");
        var move = new ExpertMove(id, from, now, bytes, watch.Elapsed.TotalMilliseconds, version, reason);
        moves.Enqueue(move);
        while (moves.Count > MovesKept) moves.Dequeue();
        logger.LogInformation("Layer {Layer} moved expert {Expert} from silo {From} to {To} at version {Version} ({Reason}): {Bytes} bytes in {Milliseconds:F0} ms",
            Layer, id, from, now, version, reason, bytes, move.Milliseconds);
        return move;
    }
}
