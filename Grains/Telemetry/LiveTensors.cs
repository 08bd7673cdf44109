using TorchSharp;

namespace MoeCluster.Grains.Telemetry;

/// <summary>The TorchSharp tensors alive in this process, for leak checks.</summary>
public static class LiveTensors
{
    /// <summary>
    /// <c>torch.Tensor.TotalCount</c> after a full collection: a tensor that was never disposed
    /// counts until its finalizer runs, so without the collection the count rises and falls with
    /// the garbage collector's schedule instead of with what is really held.
    /// </summary>
    public static long CountAfterCollection()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return torch.Tensor.TotalCount;
    }
}
