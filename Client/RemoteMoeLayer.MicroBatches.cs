using Microsoft.Extensions.Logging;
using static TorchSharp.torch;

namespace MoeCluster.Client;

/// <summary>
/// Micro-batches in flight: one batch sent as several forwards (then backwards) at once, so that
/// while the router gates and combines one micro-batch the experts compute another. With two
/// silo processes, 2 micro-batches took the standard layer's training step to 0.82–0.98 of one
/// batch's time in five measurements (README, Performance); with one silo, whose compute queue
/// does all the work in turn, to 0.96–1.11, so it is the caller's choice, not a default.
/// </summary>
public sealed partial class RemoteMoeLayer
{
    /// <summary>
    /// y for x = [T, d_model], sent as <paramref name="microBatches"/> consecutive row slices in
    /// flight at once (see <see cref="MicroBatchedForward"/>). Each slice is a micro-batch of its
    /// own: its capacity and aux loss are its own, so the result equals the slices' forwards one
    /// after another, not one forward of x. If one slice fails, the others' training forwards are
    /// discarded and the failure is thrown.
    /// </summary>
    public async Task<MicroBatchedForward> ForwardMicroBatchesAsync(Tensor x, int microBatches, bool train = true, TokenLabels? labels = null)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (microBatches < 1)
            throw new ArgumentOutOfRangeException(nameof(microBatches), microBatches, $"micro-batches is {microBatches}; expected at least 1");
        CheckShape(x);
        var slices = MicroBatchedForward.Slices(x.shape[0], microBatches);
        if (slices.Length == 1)
        {
            var one = await ForwardAsync(x, train, labels: labels);
            return new MicroBatchedForward([one.BatchId], [x.shape[0]], one.Y, one.AuxLoss, one.LoadBalancingLoss, one.ZLoss, one.Routing);
        }
        // The whole batch, before any slice is sent; the message limit applies to a slice.
        guard.Check(x, nameof(x), Name, Spec, slices.Max(s => s.Rows));
        labels?.CheckCounts(x.shape[0]); // before the labels are cut; the router checks their values
        // The views live until their calls end: a forward reads its x's device after the answer comes.
        var views = slices.Select(s => x.narrow(0, s.Start, s.Rows)).ToArray();
        var calls = slices.Select((s, i) => ForwardCheckedAsync(views[i], train, null, labels is null ? null : Slice(labels, s.Start, s.Rows))).ToArray();
        try
        {
            await Task.WhenAll(calls);
        }
        catch
        {
            foreach (var done in calls.Where(c => c.IsCompletedSuccessfully))
            {
                done.Result.Dispose();
                if (!train) continue;
                try { await DiscardAsync(done.Result.BatchId); }
                catch (Exception e) { logger.LogWarning(e, "Layer {Layer}: could not discard micro-batch {Batch} after another one failed", Name, done.Result.BatchId); }
            }
            throw;
        }
        finally
        {
            foreach (var v in views) v.Dispose();
        }
        var parts = calls.Select(c => c.Result).ToArray();
        var y = cat(parts.Select(p => p.Y).ToArray(), 0);
        foreach (var p in parts) p.Dispose();
        return new MicroBatchedForward(
            parts.Select(p => p.BatchId).ToArray(), slices.Select(s => s.Rows).ToArray(), y,
            parts.Average(p => p.AuxLoss), parts.Average(p => p.LoadBalancingLoss), parts.Average(p => p.ZLoss),
            MicroBatchedForward.Merge(parts.Select(p => p.Routing).ToArray()));
    }

    /// <summary>
    /// ∂L/∂x of a micro-batched training forward, for ∂L/∂y = <paramref name="dy"/> (the whole
    /// batch's) and ∂L/∂aux = <paramref name="auxGrad"/> for its mean aux loss: each slice's
    /// backward runs at once with its rows of dy and auxGrad / (micro-batches). dy is checked
    /// whole before any is sent. If one fails after others ran, their gradients have accumulated:
    /// the failure is thrown, and the next step throws it too, so that no step uses a partial gradient.
    /// </summary>
    public Task<Tensor> BackwardMicroBatchesAsync(MicroBatchedForward forward, Tensor dy, double auxGrad = 1.0)
    {
        ArgumentNullException.ThrowIfNull(forward);
        return BackwardMicroBatchesAsync(forward.BatchIds, forward.Rows, dy, auxGrad);
    }

    /// <summary>
    /// The same for the micro-batches' ids and row counts alone: what <see cref="RemoteMoeModule"/>
    /// keeps for its backward (keeping y there would keep the autograd graph alive for good).
    /// </summary>
    internal async Task<Tensor> BackwardMicroBatchesAsync(long[] batchIds, long[] batchRows, Tensor dy, double auxGrad)
    {
        ArgumentNullException.ThrowIfNull(dy);
        var rows = batchRows.Sum();
        if (dy.dim() != 2 || dy.shape[0] != rows || dy.shape[1] != Spec.DModel)
            throw new ArgumentException($"dy has shape [{string.Join(", ", dy.shape)}]; expected [{rows}, {Spec.DModel}] like the forward's y", nameof(dy));
        if (batchIds.Length == 1) return await BackwardAsync(batchIds[0], dy, auxGrad);
        guard.Check(dy, nameof(dy), Name, Spec, batchRows.Max());
        CheckAuxGrad(auxGrad);
        var share = auxGrad / batchIds.Length;
        var starts = batchRows.Select((_, i) => batchRows.Take(i).Sum()).ToArray();
        var views = batchRows.Select((rows, i) => dy.narrow(0, starts[i], rows)).ToArray();
        var calls = views.Select((v, i) => BackwardCheckedAsync(batchIds[i], v, share)).ToArray();
        try
        {
            await Task.WhenAll(calls);
        }
        catch (Exception e)
        {
            foreach (var done in calls.Where(c => c.IsCompletedSuccessfully)) done.Result.Dispose();
            if (calls.Any(c => c.IsCompletedSuccessfully))
            {
                var failed = Array.FindIndex(calls, c => !c.IsCompletedSuccessfully);
                RecordBackwardFailure(batchIds[failed], e);
            }
            throw;
        }
        finally
        {
            foreach (var v in views) v.Dispose();
        }
        var parts = calls.Select(c => c.Result).ToArray();
        var dx = cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return dx;
    }

    private static TokenLabels Slice(TokenLabels labels, long start, long rows)
    {
        int[] Part(int[] values) => values.Length == 0 ? values : values.AsSpan((int)start, (int)rows).ToArray();
        return new TokenLabels(Part(labels.TokenIds), Part(labels.Classes));
    }
}
