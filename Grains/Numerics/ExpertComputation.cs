using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Numerics;

public enum ExpertBackwardMode
{
    /// <summary>Keep each training forward's autograd graph until its backward (fast, more memory).</summary>
    KeepGraph,
    /// <summary>Keep only the input and redo the forward in backward (a third more arithmetic).</summary>
    Recompute,
}

/// <summary>
/// An expert's side of the exchange: forward on the rows it was sent, backward from the gated
/// output gradient, its parameter gradients accumulating until the caller steps an optimizer.
/// Training forwards are remembered by batch id until their backward or <see cref="Discard"/>.
/// Safe to call from several threads; one batch id must not be used twice concurrently.
/// </summary>
public sealed class ExpertComputation : IDisposable
{
    // MaskSeed: the dropout mask's seed, so a recomputed forward masks exactly as the first one did.
    private sealed record SavedForward(Tensor Input, Tensor? Output, long MaskSeed, DateTime SavedAt) : IDisposable
    {
        public void Dispose() { Input.Dispose(); Output?.Dispose(); }
    }

    private readonly Dictionary<long, SavedForward> saved = new();
    private readonly object gate = new();

    public ExpertComputation(ExpertFfn ffn, ExpertBackwardMode mode = ExpertBackwardMode.KeepGraph, double dropout = 0)
    {
        if (!double.IsFinite(dropout) || dropout < 0 || dropout >= 1)
            throw new ArgumentException($"expert dropout is {dropout}; expected 0 ≤ p < 1 (0 = no dropout)", nameof(dropout));
        Ffn = ffn;
        Mode = mode;
        Dropout = dropout;
    }

    public ExpertFfn Ffn { get; }
    public ExpertBackwardMode Mode { get; }
    /// <summary>Dropout rate on the hidden activation of training forwards.</summary>
    public double Dropout { get; }

    /// <summary>The dropout mask of a training forward with <paramref name="maskSeed"/>, or null when dropout is off.</summary>
    private Tensor? Mask(long rows, long maskSeed) =>
        Dropout > 0 ? ExpertDropout.Mask(rows, Ffn.HiddenSize, Dropout, maskSeed, Ffn.DType, Ffn.Device) : null;

    /// <summary>Training forwards whose backward has not come yet.</summary>
    public int PendingCount { get { lock (gate) return saved.Count; } }

    /// <summary>
    /// FFN(x) as Float32 [n, d]. In training, remembers what backward needs under <paramref name="batchId"/>
    /// and applies dropout with the mask drawn from <paramref name="maskSeed"/> (see <see cref="LayerSeeds.ExpertDropout"/>).
    /// </summary>
    public Tensor Forward(long batchId, Tensor x, bool train, long maskSeed = 0)
    {
        if (train) lock (gate)
        {
            if (saved.ContainsKey(batchId))
                throw new InvalidOperationException($"batch {batchId} already has a saved forward on this expert; run its backward (or discard it) before repeating the forward");
        }
        using var scope = NewDisposeScope();
        var input = x.to(Ffn.DType).detach();
        if (!train || Mode == ExpertBackwardMode.Recompute)
        {
            Tensor result;
            using (no_grad()) result = Ffn.Forward(input, train ? Mask(input.shape[0], maskSeed) : null).to(ScalarType.Float32);
            if (train) Remember(batchId, new SavedForward(input.DetachFromDisposeScope(), null, maskSeed, DateTime.UtcNow));
            return result.MoveToOuterDisposeScope();
        }
        Tensor output;
        using (enable_grad())
        {
            input.requires_grad_(true);
            output = Ffn.Forward(input, Mask(input.shape[0], maskSeed));
        }
        var y = output.detach().to(ScalarType.Float32);
        Remember(batchId, new SavedForward(input.DetachFromDisposeScope(), output.DetachFromDisposeScope(), maskSeed, DateTime.UtcNow));
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Backpropagates ∂L/∂FFN(x) of a remembered forward: parameter gradients accumulate, and
    /// ∂L/∂x comes back as Float32 [n, d]. The saved forward is consumed.
    /// </summary>
    public Tensor Backward(long batchId, Tensor outputGrad)
    {
        SavedForward? s;
        lock (gate)
        {
            if (!saved.TryGetValue(batchId, out s))
                throw new InvalidOperationException($"no saved forward for batch {batchId} on this expert: it never ran in training, its backward already ran, or it expired");
            // A bad gradient is rejected before the saved forward is consumed, so a corrected retry works.
            if (outputGrad.dim() != 2 || outputGrad.shape[0] != s.Input.shape[0] || outputGrad.shape[1] != s.Input.shape[1])
                throw new ArgumentException($"output gradient has shape {LayerInputChecks.Shape(outputGrad)}; expected [{s.Input.shape[0]}, {s.Input.shape[1]}] like the forward's input", nameof(outputGrad));
            saved.Remove(batchId);
        }
        using (s)
        {
            using var scope = NewDisposeScope();
            var grad = outputGrad.to(Ffn.DType, s.Input.device);
            Tensor input = s.Input, output;
            using (enable_grad())
            {
                if (s.Output is null)
                {
                    input = s.Input.detach().requires_grad_(true);
                    output = Ffn.Forward(input, Mask(input.shape[0], s.MaskSeed));
                }
                else output = s.Output;
                output.backward([grad]);
            }
            using var dx = input.grad ?? throw new InvalidOperationException("autograd produced no input gradient");
            return dx.to(ScalarType.Float32, copy: true).MoveToOuterDisposeScope();
        }
    }

    /// <summary>The saved forwards' inputs by batch id (the tensors stay owned by this object).</summary>
    public (long BatchId, Tensor Input)[] SavedInputs() { lock (gate) return saved.Select(p => (p.Key, p.Value.Input)).ToArray(); }

    /// <summary>
    /// Remembers a training forward by its input only, as if it had run here in recompute mode:
    /// its backward redoes the forward. Used when an expert arrives from another silo mid-step.
    /// Takes ownership of <paramref name="input"/>; <paramref name="maskSeed"/> is the seed its forward drew its dropout mask from.
    /// </summary>
    public void AdoptSavedInput(long batchId, Tensor input, long maskSeed = 0) =>
        Remember(batchId, new SavedForward(input.to(Ffn.DType, Ffn.Device, disposeAfter: true), null, maskSeed, DateTime.UtcNow));

    /// <summary>The batch ids with a saved forward.</summary>
    public long[] PendingIds() { lock (gate) return saved.Keys.ToArray(); }

    /// <summary>Frees the saved forward of a batch whose backward will not come. False when there was none.</summary>
    public bool Discard(long batchId)
    {
        SavedForward? s;
        lock (gate) { if (!saved.Remove(batchId, out s)) return false; }
        s.Dispose();
        return true;
    }

    /// <summary>Frees saved forwards older than <paramref name="maxAge"/>; returns how many.</summary>
    public int DiscardOlderThan(TimeSpan maxAge)
    {
        var cutoff = DateTime.UtcNow - maxAge;
        List<SavedForward> expired = [];
        lock (gate)
        {
            foreach (var (id, s) in saved.Where(p => p.Value.SavedAt < cutoff).ToList())
            {
                saved.Remove(id);
                expired.Add(s);
            }
        }
        foreach (var s in expired) s.Dispose();
        return expired.Count;
    }

    private void Remember(long batchId, SavedForward s)
    {
        lock (gate) saved[batchId] = s;
    }

    public void Dispose()
    {
        lock (gate)
        {
            foreach (var s in saved.Values) s.Dispose();
            saved.Clear();
        }
        Ffn.Dispose();
    }
}
