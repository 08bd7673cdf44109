using MoeCluster.Grains.Compute;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Tests.Compute;

public class ComputeQueueTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_pool_of_two_workers_runs_two_items_at_once()
    {
        using var queue = new ComputeQueue("cpu", torchThreads: 1, workers: 2);
        // Each item waits for the other: both get through only if they run at the same time.
        using var meeting = new Barrier(2);
        var both = await Task.WhenAll(queue.RunAsync(() => meeting.SignalAndWait(Patience)), queue.RunAsync(() => meeting.SignalAndWait(Patience)));
        Assert.Equal([true, true], both);
    }

    [Fact]
    public async Task A_serial_queue_runs_items_one_at_a_time_in_order()
    {
        using var queue = new ComputeQueue("cpu", torchThreads: 1);
        var order = new List<int>();
        var running = 0;
        var overlapped = false;
        await Task.WhenAll(Enumerable.Range(0, 50).Select(i => queue.RunAsync(() =>
        {
            if (Interlocked.Increment(ref running) > 1) overlapped = true;
            order.Add(i);
            Thread.SpinWait(100);
            Interlocked.Decrement(ref running);
        })));
        Assert.False(overlapped);
        Assert.Equal(Enumerable.Range(0, 50), order);
    }

    [Fact]
    public async Task Every_queue_keeps_its_own_libtorch_thread_count()
    {
        // Started together, in this order: the last count set in the process is 3, which libtorch
        // would hand to every thread at its first parallel operation if the queue did not pin its own.
        using var single = new ComputeQueue("cpu", torchThreads: 1, workers: 2);
        using var triple = new ComputeQueue("cpu", torchThreads: 3);
        int CountAfterWork()
        {
            using var scope = NewDisposeScope();
            ones(256, 256).matmul(ones(256, 256)).sum().item<float>();
            return get_num_threads();
        }
        using var meeting = new Barrier(2);
        var counts = await Task.WhenAll(Enumerable.Range(0, 2).Select(_ => single.RunAsync(() =>
        {
            meeting.SignalAndWait(Patience); // both workers answer, not one of them twice
            return CountAfterWork();
        })));
        Assert.Equal([1, 1], counts);
        Assert.Equal(3, await triple.RunAsync(CountAfterWork));
    }

    [Fact]
    public void Cpu_experts_get_a_pool_and_the_router_queue_and_gpus_stay_serial()
    {
        using var queues = new ComputeQueues(torchThreads: 2, expertWorkers: 2);
        Assert.Equal(2, queues.ForExperts("cpu").Workers);
        Assert.Equal(1, queues.For("cpu").Workers);
        Assert.NotSame(queues.For("cpu"), queues.ForExperts("cpu"));
        Assert.Same(queues.ForExperts("cpu"), queues.ForExperts("cpu"));
        Assert.Same(queues.For("cuda:0"), queues.ForExperts("cuda:0"));
        using var single = new ComputeQueues(torchThreads: 2);
        Assert.Same(single.For("cpu"), single.ForExperts("cpu"));
    }
}
