using System.Diagnostics;
using MoeCluster.Grains.Compute;
using static TorchSharp.torch;

namespace MoeCluster.Bench;

/// <summary>
/// libtorch's float32 matrix-multiply rate on this machine, measured in the same run as the
/// layers: the limit that the layer's GEMMs can reach. Square n×n products, 2·n³ operations each,
/// on a compute queue with libtorch's threads set to the cores.
/// </summary>
public static class GemmRate
{
    public static Task<double> MeasureGflopsAsync(ComputeQueue queue, int n, int repeats) => queue.RunAsync(() =>
    {
        using var generator = new Generator(3);
        using var a = randn(n, n, generator: generator);
        using var b = randn(n, n, generator: generator);
        using var c = empty(n, n);
        matmul(a, b).Dispose(); // warm-up
        var seconds = new List<double>();
        for (int i = 0; i < repeats; i++)
        {
            var watch = Stopwatch.StartNew();
            a.matmul(b).Dispose();
            seconds.Add(watch.Elapsed.TotalSeconds);
        }
        seconds.Sort();
        return 2.0 * n * n * (double)n / seconds[seconds.Count / 2] / 1e9;
    });
}
