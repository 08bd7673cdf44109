using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace MoeCluster.Grains.Compute;

/// <summary>
/// Hands the managed memory of a one-off burst back to the operating system. When a layer is
/// created, every expert on a silo encodes its first checkpoint at once: for a d 512 / d_ff 2048
/// expert a 24 MiB record (24 MiB of captured state more before checkpoints were encoded from the
/// live tensors), garbage a moment later. The GC collects it but keeps the space committed, so training started on top of it
/// (the bench's memory probe: the silo process peaked at 1.24–1.38× the reference process with
/// the space kept, 0.94–0.97× with it handed back). One compacting collection right after the
/// burst fixes that; a burst under <see cref="MinimumBurstBytes"/> is not worth a collection.
/// Requests that come while a trim runs share the next one: the 8 experts of the bench's layer,
/// whose writes end at different times, cost 4–7 collections of 17–92 ms, not 8.
/// </summary>
public sealed class ManagedMemoryTrim
{
    /// <summary>Bursts smaller than this (a small expert's checkpoint) are left to the GC's own pace.</summary>
    public const long MinimumBurstBytes = 8L << 20;

    private readonly ILogger<ManagedMemoryTrim> logger;
    private readonly Action collect;
    private readonly SemaphoreSlim one = new(1, 1);
    private long requested;
    private long covered;

    public ManagedMemoryTrim(ILogger<ManagedMemoryTrim> logger)
        : this(logger, () => GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true))
    {
    }

    /// <summary>Tests pass a collection they can hold open, to make requests arrive while it runs.</summary>
    internal ManagedMemoryTrim(ILogger<ManagedMemoryTrim> logger, Action collect)
    {
        this.logger = logger;
        this.collect = collect;
    }

    /// <summary>Collections run so far (for tests).</summary>
    public int Trims { get; private set; }

    /// <summary>
    /// Called after a burst of <paramref name="bytes"/> of now-dead managed buffers; completes when
    /// a compacting collection that started after this call has run (or at once for a small burst).
    /// </summary>
    public async Task AfterBurstAsync(long bytes, string what)
    {
        if (bytes < MinimumBurstBytes) return;
        var ticket = Interlocked.Increment(ref requested);
        await one.WaitAsync();
        try
        {
            // A trim that started after this request was made has collected this burst already.
            if (Volatile.Read(ref covered) >= ticket) return;
            var upTo = Volatile.Read(ref requested);
            await Task.Run(() => Trim(what));
            Volatile.Write(ref covered, upTo);
        }
        finally
        {
            one.Release();
        }
    }

    private void Trim(string what)
    {
        var before = Environment.WorkingSet;
        var watch = Stopwatch.StartNew();
        collect();
        Trims++;
        logger.LogInformation("managed memory handed back after {What}: resident {Before:F0} → {After:F0} MiB in {Ms:F0} ms",
            what, before / 1048576.0, Environment.WorkingSet / 1048576.0, watch.Elapsed.TotalMilliseconds);
    }
}
