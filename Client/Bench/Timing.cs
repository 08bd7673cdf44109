using System.Diagnostics;

namespace MoeCluster.Bench;

/// <summary>The median wall time of repeated work after warm-up; every repeat is one sample.</summary>
public static class Timing
{
    public static async Task<(double MedianMs, T Last)> MedianAsync<T>(int warmup, int repeats, Func<Task<T>> work)
    {
        T last = default!;
        for (int i = 0; i < warmup; i++) last = await work();
        var times = new List<double>(repeats);
        for (int i = 0; i < repeats; i++)
        {
            var watch = Stopwatch.StartNew();
            last = await work();
            times.Add(watch.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        return (times[times.Count / 2], last);
    }
}
