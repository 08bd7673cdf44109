using System.Collections.Concurrent;
using System.Diagnostics;

namespace MoeCluster.Grains.Compute;

/// <summary>
/// Runs one device's tensor work on dedicated threads. Grains await it instead of computing on
/// the Orleans scheduler (turns over 1 s are flagged) or on every pool thread at once (CPU
/// experts would oversubscribe the cores that libtorch's own intra-op threads already use).
/// With one worker, items run one at a time in the order they came (the router's gate gradient
/// accumulates in that order); with several, that many items run at once, each on its own
/// thread with its own libtorch intra-op thread count (see <see cref="ComputeQueues"/>).
/// TorchSharp's dispose scopes and grad mode are thread-local: each item sets up its own.
/// </summary>
public sealed class ComputeQueue : IDisposable
{
    private readonly BlockingCollection<Action> work = new();
    private readonly Thread[] threads;

    private readonly int torchThreads;

    /// <param name="torchThreads">libtorch intra-op threads of each worker; 0 leaves libtorch's default.</param>
    /// <param name="workers">threads that take items off the queue; items run concurrently when more than one.</param>
    public ComputeQueue(string device, int torchThreads = 0, int workers = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        Device = device;
        this.torchThreads = torchThreads;
        threads = new Thread[workers];
        for (int i = 0; i < workers; i++)
        {
            threads[i] = new Thread(Drain) { IsBackground = true, Name = workers == 1 ? $"moe-compute-{device}" : $"moe-compute-{device}-{i}" };
            threads[i].Start();
        }
    }

    public string Device { get; }

    /// <summary>Threads that run items.</summary>
    public int Workers => threads.Length;

    /// <summary>Items waiting (not counting those running).</summary>
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
        // libtorch initialises a thread's count lazily, at its first parallel operation, to the
        // count last set on ANY thread of the process (at::lazy_init_num_threads), which would
        // undo a count set before it whenever queues of different counts start together.
        // get_num_threads() runs that initialisation now, so the count set after it stays.
        if (torchThreads > 0)
        {
            TorchSharp.torch.get_num_threads();
            TorchSharp.torch.set_num_threads(torchThreads);
        }
        foreach (var item in work.GetConsumingEnumerable()) item();
    }

    public void Dispose()
    {
        work.CompleteAdding();
        foreach (var t in threads)
            if (Thread.CurrentThread != t) t.Join(TimeSpan.FromSeconds(10));
        work.Dispose();
    }
}

/// <summary>
/// The silo's compute queues, created on first use: per device, one serial queue (the router's
/// work, which must run in order) and the queue its experts compute on — the same serial queue,
/// or for the CPU with <c>expertWorkers</c> &gt; 1 a pool of that many workers sharing the
/// libtorch threads, so that experts compute side by side, each with fewer intra-op threads.
/// <para>
/// The pool is an option, off by default: measured with <c>./moe bench --baseline-expert-workers 1</c>
/// on 2 cores under a load average of 40, 2 workers × 1 thread against 1 queue × 2 threads took
/// 3.1 s against 4.9 s for the standard forward but 6.2 s against 5.1 s for its training step and
/// 40 ms against 34 ms for a 16-token forward, and two experts' activations alive at once raised
/// the silo's peak memory from 1.23 to 1.52 GiB (the target is 1.5× the reference's 0.94 GiB).
/// </para>
/// </summary>
public sealed class ComputeQueues(int torchThreads = 0, int expertWorkers = 1) : IDisposable
{
    private readonly ConcurrentDictionary<string, Lazy<ComputeQueue>> queues = new();

    /// <summary>libtorch intra-op threads of each worker: the threads shared among the workers.</summary>
    private int ThreadsPerWorker => torchThreads <= 0 ? 0 : Math.Max(1, torchThreads / Math.Max(1, expertWorkers));

    /// <summary>The device's serial queue: items run one at a time, in order.</summary>
    public ComputeQueue For(string device) =>
        queues.GetOrAdd(device, d => new Lazy<ComputeQueue>(() => new ComputeQueue(d, ThreadsPerWorker))).Value;

    /// <summary>
    /// The queue the experts of <paramref name="device"/> compute on: for the CPU, a pool of
    /// <c>expertWorkers</c> workers (one expert's calls still run one at a time: expert grains are
    /// not reentrant); for a GPU, the device's serial queue.
    /// </summary>
    public ComputeQueue ForExperts(string device) =>
        expertWorkers <= 1 || device != "cpu" ? For(device)
        : queues.GetOrAdd($"{device}/experts", _ => new Lazy<ComputeQueue>(() => new ComputeQueue(device, ThreadsPerWorker, expertWorkers))).Value;

    public void Dispose()
    {
        foreach (var q in queues.Values) if (q.IsValueCreated) q.Value.Dispose();
    }
}
