using Microsoft.Extensions.Logging.Abstractions;
using MoeCluster.Grains.Compute;
using Xunit;

namespace MoeCluster.Grains.Tests.Compute;

/// <summary>The compacting collection after a burst of dead buffers: run for big bursts only, and shared by requests that come together.</summary>
public class ManagedMemoryTrimTests
{
    [Fact]
    public async Task A_burst_under_the_minimum_runs_no_collection()
    {
        var trim = new ManagedMemoryTrim(NullLogger<ManagedMemoryTrim>.Instance);
        await trim.AfterBurstAsync(ManagedMemoryTrim.MinimumBurstBytes - 1, "a small expert's checkpoint");
        Assert.Equal(0, trim.Trims);
    }

    [Fact]
    public async Task A_big_burst_runs_a_full_collection_before_it_returns()
    {
        var trim = new ManagedMemoryTrim(NullLogger<ManagedMemoryTrim>.Instance);
        var before = GC.CollectionCount(GC.MaxGeneration);
        await trim.AfterBurstAsync(ManagedMemoryTrim.MinimumBurstBytes, "a checkpoint");
        Assert.Equal(1, trim.Trims);
        Assert.True(GC.CollectionCount(GC.MaxGeneration) > before, "no full collection ran");
    }

    [Fact]
    public async Task Eight_bursts_at_once_share_two_collections()
    {
        // The first collection is held open until the seven other requests are in, so they come
        // while it runs however the scheduler treats this thread.
        var firstStarted = new ManualResetEventSlim();
        var releaseFirst = new ManualResetEventSlim();
        var collections = 0;
        var trim = new ManagedMemoryTrim(NullLogger<ManagedMemoryTrim>.Instance, () =>
        {
            if (Interlocked.Increment(ref collections) > 1) return;
            firstStarted.Set();
            releaseFirst.Wait(TimeSpan.FromSeconds(30));
        });
        var first = trim.AfterBurstAsync(24L << 20, "expert 0");
        Assert.True(firstStarted.Wait(TimeSpan.FromSeconds(30)), "the first collection never started");
        var rest = Enumerable.Range(1, 7).Select(i => trim.AfterBurstAsync(24L << 20, $"expert {i}")).ToArray();
        Assert.False(first.IsCompleted);
        releaseFirst.Set();
        await first;
        await Task.WhenAll(rest);
        // The first runs alone; the seven that came while it ran are all covered by the one after it.
        Assert.Equal(2, trim.Trims);
        Assert.Equal(2, collections);
        // A later burst is not covered by the collections before it.
        await trim.AfterBurstAsync(24L << 20, "a later expert");
        Assert.Equal(3, trim.Trims);
    }
}
