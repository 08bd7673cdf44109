using System.Diagnostics;
using MoeCluster.Grains.Compute;
using MoeCluster.Grains.Numerics;
using MoeCluster.Grains.Training;
using static TorchSharp.torch;

namespace MoeCluster.Bench;

/// <summary>
/// The memory floor of a small batch: a 16-token forward of the standard layer sends tokens to
/// (nearly) every expert, and each expert reads all of its weights for them — 64 MiB in Float32
/// for d = 512, d_ff = 2048, E = 8, more than this machine's caches hold. Whatever the cluster
/// does, that forward cannot take less than reading those bytes once, which this measures in
/// the same run: a sum over a tensor of that size, median of repeats, the faster of one
/// libtorch thread and one per core.
/// </summary>
public static class WeightReadFloor
{
    /// <summary>Bytes of all of the layer's expert parameters, counted from one expert built as the cluster builds it.</summary>
    public static long ExpertWeightBytes(LayerSpec spec)
    {
        using var scope = NewDisposeScope();
        using var ffn = ExpertFfn.Create(LayerSpecMapping.ToConfig(spec), seed: 0);
        return spec.NumExperts * ffn.parameters().Sum(p => p.NumberOfElements * p.ElementSize);
    }

    public static async Task<double> MeasureMsAsync(long bytes, int repeats)
    {
        var best = double.MaxValue;
        foreach (var threads in new[] { 1, Environment.ProcessorCount }.Distinct())
        {
            using var queue = new ComputeQueue("bench-memory", threads);
            best = Math.Min(best, await queue.RunAsync(() =>
            {
                using var weights = ones(bytes / sizeof(float));
                weights.sum().Dispose(); // warm-up: the pages are touched before the timing
                var ms = new List<double>();
                for (int i = 0; i < repeats; i++)
                {
                    var watch = Stopwatch.StartNew();
                    weights.sum().Dispose();
                    ms.Add(watch.Elapsed.TotalMilliseconds);
                }
                ms.Sort();
                return ms[ms.Count / 2];
            }));
        }
        return best;
    }
}
