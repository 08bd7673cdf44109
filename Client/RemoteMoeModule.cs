using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Client;

/// <summary>
/// A remote layer as a TorchSharp module: call it inside a local model's <c>forward</c>, and
/// <c>loss.backward()</c> reaches the cluster through a custom autograd function. Add
/// <see cref="AuxLoss"/> to the loss to train the router's load balancing. Training mode
/// (the module's <c>training</c> flag) decides whether the cluster keeps state for backward.
/// A backward that fails in the cluster cannot throw out of <c>loss.backward()</c>; the next
/// <see cref="RemoteMoeLayer.StepAsync()"/> or forward throws it, so no step uses a partial gradient.
/// </summary>
public sealed class RemoteMoeModule : nn.Module<Tensor, Tensor>
{
    // A zero-size tensor that requires grad, passed to the function with x: the autograd node
    // is then always part of the graph, so the cluster's experts get their backward even when
    // x itself needs no gradient (the remote layer is the model's first trainable part).
    private readonly Tensor anchor = zeros(0, requires_grad: true);

    public RemoteMoeModule(RemoteMoeLayer layer) : base($"RemoteMoe({layer.Name})")
    {
        Layer = layer;
    }

    public RemoteMoeLayer Layer { get; }

    /// <summary>The last training forward's α·L_aux + β·L_z as a scalar in the graph (null before one, or in eval).</summary>
    public Tensor? AuxLoss { get; private set; }

    /// <summary>The last forward's routing counts.</summary>
    public RoutingSummary? LastRouting { get; private set; }

    /// <summary>
    /// Micro-batches each forward's batch is sent as, in flight at once (1, the default: one
    /// forward). See <see cref="RemoteMoeLayer.ForwardMicroBatchesAsync"/>: each is routed with its
    /// own capacity, and <see cref="AuxLoss"/> is the mean of theirs.
    /// </summary>
    public int MicroBatches
    {
        get => microBatches;
        set => microBatches = value >= 1 ? value
            : throw new ArgumentOutOfRangeException(nameof(MicroBatches), value, $"micro-batches is {value}; expected at least 1");
    }
    private int microBatches = 1;

    /// <summary>Labels of the next forward's tokens, for the layer's specialization report; used once.</summary>
    public TokenLabels? NextLabels { get; set; }

    private TokenLabels? TakeLabels()
    {
        var labels = NextLabels;
        NextLabels = null;
        return labels;
    }

    public override Tensor forward(Tensor x)
    {
        Layer.ThrowIfBackwardFailed();
        if (!training)
        {
            using var r = Layer.ForwardMicroBatchesAsync(x, MicroBatches, train: false, labels: TakeLabels()).GetAwaiter().GetResult();
            LastRouting = r.Routing;
            AuxLoss = null;
            return r.Y.clone();
        }
        var outputs = RemoteLayerFunction.apply(x, anchor, this);
        AuxLoss = outputs[1];
        return outputs[0];
    }

    internal void Remember(RoutingSummary routing) => LastRouting = routing;

    protected override void Dispose(bool disposing)
    {
        if (disposing) anchor.Dispose();
        base.Dispose(disposing);
    }

    private sealed record SavedForward(long[] BatchIds, long[] Rows);

    private sealed class RemoteLayerFunction : autograd.MultiTensorFunction<RemoteLayerFunction>
    {
        public override string Name => "RemoteMoeLayer";

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var x = (Tensor)vars[0];
            var module = (RemoteMoeModule)vars[2];
            var r = module.Layer.ForwardMicroBatchesAsync(x, module.MicroBatches, train: true, labels: module.TakeLabels()).GetAwaiter().GetResult();
            module.Remember(r.Routing);
            // y goes to autograd; only the batch ids and row counts are kept for backward. The
            // context lives as long as TorchSharp's managed node, which stays reachable until the
            // native node goes: holding y here (whose grad_fn is that node) would keep both for
            // good, one y-sized tensor per layer per step (an LM sweep grew to 23 GB with it).
            ctx.save_data("forward", new SavedForward(r.BatchIds, r.Rows));
            ctx.save_data("module", module);
            return [r.Y, tensor((float)r.AuxLoss)];
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var forward = (SavedForward)ctx.get_data("forward");
            var module = (RemoteMoeModule)ctx.get_data("module");
            Tensor dx;
            try
            {
                var auxGrad = gradOutputs[1].item<float>();
                dx = module.Layer.BackwardMicroBatchesAsync(forward.BatchIds, forward.Rows, gradOutputs[0], auxGrad).GetAwaiter().GetResult();
            }
            catch (Exception e)
            {
                // An exception cannot cross libtorch's autograd engine (it would end the process).
                // The layer keeps it and the next step or forward throws it instead.
                module.Layer.RecordBackwardFailure(forward.BatchIds[0], e);
                dx = zeros_like(gradOutputs[0]);
            }
            // One gradient per forward argument: x, the anchor, and none for the module itself.
            return [dx, zeros_like(module.anchor), null!];
        }
    }
}
