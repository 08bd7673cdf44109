using Xunit;

namespace MoeCluster.Hosting.Tests;

/// <summary><c>--devices</c>: what a silo advertises with and without CUDA devices, and the refusals.</summary>
public class DeviceInventoryTests
{
    [Fact]
    public void Auto_takes_every_CUDA_device_else_the_cpu()
    {
        Assert.Equal([new DeviceSlot("cpu", 4)], DeviceInventory.Resolve("auto", 4, cudaDevices: 0));
        Assert.Equal([new DeviceSlot("cuda:0", 2), new DeviceSlot("cuda:1", 2)], DeviceInventory.Resolve("auto", 2, cudaDevices: 2));
        Assert.Equal([new DeviceSlot("cuda:1", 3), new DeviceSlot("cpu", 3)], DeviceInventory.Resolve("cuda:1, CPU", 3, cudaDevices: 2));
    }

    [Fact]
    public void A_CUDA_device_that_is_not_there_is_refused_with_a_clear_message()
    {
        var none = Assert.Throws<ArgumentException>(() => DeviceInventory.Resolve("cuda:0", 4, cudaDevices: 0));
        Assert.Equal("--devices names cuda:0 but libtorch sees no CUDA device here: this machine has none, or this is the CPU build " +
            "(a GPU host builds with -p:MoeCuda=true, or MOE_CUDA=1 ./moe); use cpu or auto", none.Message);
        var beyond = Assert.Throws<ArgumentException>(() => DeviceInventory.Resolve("cuda:0,cuda:2", 4, cudaDevices: 2));
        Assert.Equal("--devices names cuda:2 but this machine has CUDA devices cuda:0..cuda:1", beyond.Message);
        Assert.Throws<ArgumentException>(() => DeviceInventory.Resolve("gpu0", 4, cudaDevices: 1));
        Assert.Throws<ArgumentException>(() => DeviceInventory.Resolve("cuda:0,cuda:0", 4, cudaDevices: 1));
    }
}
