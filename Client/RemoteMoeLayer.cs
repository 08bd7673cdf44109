using System.Security.Cryptography;
using MoeCluster.Grains.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Client;

/// <summary>
/// One MoE layer of the cluster, called with TorchSharp tensors. Forwards may overlap; each
/// training forward gets a batch id that its backward names. Gradients accumulate over
/// micro-batches until <see cref="StepAsync()"/>.
/// </summary>
public sealed class RemoteMoeLayer
{
    // Batch ids must not collide between clients of one layer: a random start per client, then a counter.
    private static long nextBatchId = RandomNumberGenerator.GetInt32(int.MaxValue) * (1L << 24);

    private readonly IMoeRouterGrain router;
    private long? version;
    private (long Batch, Exception Error)? backwardFailure;

    internal RemoteMoeLayer(IClusterClient client, string name, LayerSpec spec)
    {
        Name = name;
        Spec = spec;
        router = client.GetGrain<IMoeRouterGrain>(name);
    }

    public string Name { get; }
    public LayerSpec Spec { get; }

    /// <summary>A fresh batch id, unique to this process.</summary>
    public static long NewBatchId() => Interlocked.Increment(ref nextBatchId);

    /// <summary>
    /// y for x = [T, d_model] (Float32, BFloat16 or Float16; y comes back in x's dtype). With
    /// <paramref name="train"/>, the cluster keeps what backward needs under the returned batch id.
    /// </summary>
    public async Task<RemoteLayerForward> ForwardAsync(Tensor x, bool train = true, long? batchId = null)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dim() != 2 || x.shape[1] != Spec.DModel)
            throw new ArgumentException($"x has shape [{string.Join(", ", x.shape)}]; layer \"{Name}\" expects [tokens, {Spec.DModel}]", nameof(x));
        var id = batchId ?? NewBatchId();
        var result = await router.Forward(id, TensorWire.ToPayload(x), train);
        var y = TensorWire.FromPayload(result.Y, x.device);
        return new RemoteLayerForward(id, y, result.AuxLoss, result.LoadBalancingLoss, result.ZLoss, result.Routing);
    }

    /// <summary>
    /// ∂L/∂x of the batch's forward, for ∂L/∂y = <paramref name="dy"/> and ∂L/∂aux = <paramref name="auxGrad"/>
    /// (fold loss scaling and gradient accumulation into both). The layer's weight gradients accumulate.
    /// </summary>
    public async Task<Tensor> BackwardAsync(long batchId, Tensor dy, double auxGrad = 1.0)
    {
        ArgumentNullException.ThrowIfNull(dy);
        var dx = await router.Backward(batchId, TensorWire.ToPayload(dy), auxGrad);
        return TensorWire.FromPayload(dx, dy.device);
    }

    /// <summary>Applies the next step (the layer's version + 1) and returns the new version.</summary>
    public async Task<long> StepAsync()
    {
        ThrowIfBackwardFailed();
        version ??= await router.GetVersion();
        return await StepAsync(version.Value + 1);
    }

    /// <summary>Applies step <paramref name="stepId"/>; a step already applied is ignored, so a retry is safe.</summary>
    public async Task<long> StepAsync(long stepId)
    {
        ThrowIfBackwardFailed();
        var v = await router.Step(stepId);
        version = v;
        return v;
    }

    internal void RecordBackwardFailure(long batch, Exception error) => backwardFailure ??= (batch, error);

    /// <summary>Throws (once) the failure of a backward that ran inside libtorch's autograd engine, where it could not throw.</summary>
    public void ThrowIfBackwardFailed()
    {
        if (backwardFailure is not { } failure) return;
        backwardFailure = null;
        throw new InvalidOperationException(
            $"the backward of batch {failure.Batch} through layer \"{Name}\" failed, so its gradients are incomplete: {failure.Error.Message}", failure.Error);
    }

    /// <summary>Optimizer steps applied to the layer.</summary>
    public Task<long> GetVersionAsync() => router.GetVersion();

    /// <summary>Frees a training forward whose backward will not come.</summary>
    public Task DiscardAsync(long batchId) => router.Discard(batchId);

    public Task<LayerStats> GetStatsAsync() => router.GetStats();

    /// <summary>The gate and every expert parameter as tensors, named as the reference layer names them.</summary>
    public async Task<Dictionary<string, Tensor>> GetWeightsAsync()
    {
        var weights = await router.GetWeights();
        return weights.ToDictionary(w => w.Name, w => TensorWire.FromPayload(w.Value));
    }
}
