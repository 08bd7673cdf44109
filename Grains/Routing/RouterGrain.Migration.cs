using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace MoeCluster.Grains.Routing;

/// <summary>
/// Live moves of experts between silos. A move happens at a step boundary, under the write side
/// of the weights gate, so no micro-batch of a step is ever open on an expert that leaves: the
/// expert captures its state, migrates with a placement hint, and its next activation takes the
/// state over from the migration itself; the router waits until it answers from the target.
/// </summary>
public sealed partial class RouterGrain
{
    private const int MovesKept = 100;
    private static readonly TimeSpan MoveTimeout = TimeSpan.FromSeconds(30);
    private readonly Queue<ExpertMove> moves = new();

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
        var expert = experts[column];
        var from = (await expert.GetStats()).Placement.Silo;
        if (from == silo) return new ExpertMove(id, from, silo, 0, 0, version);

        var watch = Stopwatch.StartNew();
        var bytes = await expert.MigrateTo(target.Silo);
        // Calls that reach the expert while it moves wait for its new activation.
        string now;
        while ((now = (await expert.GetStats()).Placement.Silo) == from && watch.Elapsed < MoveTimeout) await Task.Delay(10);
        if (now != silo)
            throw new InvalidOperationException($"{what}: it is on silo {now} after {watch.Elapsed.TotalSeconds:F1} s (the target had no free slot, or the move did not finish)");
        var move = new ExpertMove(id, from, now, bytes, watch.Elapsed.TotalMilliseconds, version);
        moves.Enqueue(move);
        while (moves.Count > MovesKept) moves.Dequeue();
        logger.LogInformation("Layer {Layer} moved expert {Expert} from silo {From} to {To} at version {Version}: {Bytes} bytes in {Milliseconds:F0} ms",
            Layer, id, from, now, version, bytes, move.Milliseconds);
        return move;
    }
}
