using System.Collections.Concurrent;
using System.Diagnostics;

namespace MoeCluster.Grains.Compute;

/// <summary>
/// Runs one device's tensor work, one item at a time, on a dedicated thread. Grains await it
/// instead of computing on the Orleans scheduler (turns over 1 s are flagged) or on every pool
/// thread at once (CPU experts would oversubscribe the cores that libtorch's own intra-op
/// threads already use). One thread also keeps TorchSharp's thread-local dispose scopes and
/// grad mode in one place.
/// </summary>
public sealed class ComputeQueue : IDisposable
{
    private readonly BlockingCollection<Action> work = new();
    private readonly Thread thread;

    private readonly int torchThreads;

    /// <param name="torchThreads">libtorch intra-op threads for this queue's work; 0 leaves libtorch's default.</param>
    public ComputeQueue(string device, int torchThreads = 0)
    {
        Device = device;
        this.torchThreads = torchThreads;
        thread = new Thread(Drain) { IsBackground = true, Name = $"moe-compute-{device}" };
        thread.Start();
    }

    public string Device { get; }

    /// <summary>Items waiting or running.</summary>
    public int Depth => work.Count;

    /// <summary>Runs <paramref name="compute"/> on the device's thread; the result carries its run time.</summary>
    public Task<(T Result, TimeSpan Elapsed)> RunTimedAsync<T>(Func<T> compute)
    {
        var done = new TaskCompletionSource<(T, TimeSpan)>(TaskCreationOptions.RunContinuationsAsynchronously);
        work.Add(() =>
        {
            var watch = Stopwatch.StartNew();
            try { done.SetResult((compute(), watch.Elapsed)); }
            catch (Exception e) { done.SetException(e); }
        });
        return done.Task;
    }

    public async Task<T> RunAsync<T>(Func<T> compute) => (await RunTimedAsync(compute)).Result;

    public Task RunAsync(Action compute) => RunAsync(() => { compute(); return true; });

    private void Drain()
    {
        // OpenMP keeps its thread count per calling thread: a count set on the thread that built
        // the silo does not reach this one, and MKL would pick its own (and vary the summation
        // order between runs). Set it here, where every tensor operation of the device runs.
        if (torchThreads > 0) TorchSharp.torch.set_num_threads(torchThreads);
        foreach (var item in work.GetConsumingEnumerable()) item();
    }

    public void Dispose()
    {
        work.CompleteAdding();
        if (Thread.CurrentThread != thread) thread.Join(TimeSpan.FromSeconds(10));
        work.Dispose();
    }
}

/// <summary>The silo's compute queues, one per device name, created on first use.</summary>
public sealed class ComputeQueues(int torchThreads = 0) : IDisposable
{
    private readonly ConcurrentDictionary<string, Lazy<ComputeQueue>> queues = new();

    public ComputeQueue For(string device) =>
        queues.GetOrAdd(device, d => new Lazy<ComputeQueue>(() => new ComputeQueue(d, torchThreads))).Value;

    public void Dispose()
    {
        foreach (var q in queues.Values) if (q.IsValueCreated) q.Value.Dispose();
    }
}
