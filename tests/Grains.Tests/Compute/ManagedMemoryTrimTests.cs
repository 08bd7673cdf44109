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
        var trim = new ManagedMemoryTrim(NullLogger<ManagedMemoryTrim>.Instance);
        // Asked from one thread without awaiting: the first runs alone, and the seven that come
        // while it runs are all covered by the one after it.
        var bursts = Enumerable.Range(0, 8).Select(i => trim.AfterBurstAsync(24L << 20, $"expert {i}")).ToArray();
        await Task.WhenAll(bursts);
        Assert.Equal(2, trim.Trims);
        // A later burst is not covered by the collections before it.
        await trim.AfterBurstAsync(24L << 20, "a later expert");
        Assert.Equal(3, trim.Trims);
    }
}
