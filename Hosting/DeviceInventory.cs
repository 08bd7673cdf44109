using TorchSharp;

namespace MoeCluster.Hosting;

/// <summary>Turns <c>--devices</c> and <c>--experts-per-device</c> into the slots a silo advertises.</summary>
public static class DeviceInventory
{
    public static DeviceSlot[] Resolve(string devices, int expertsPerDevice) =>
        Resolve(devices, expertsPerDevice, torch.cuda.is_available() ? torch.cuda.device_count() : 0);

    /// <summary>As <see cref="Resolve(string,int)"/> with the number of CUDA devices given, so it can be tested without a GPU.</summary>
    public static DeviceSlot[] Resolve(string devices, int expertsPerDevice, int cudaDevices)
    {
        if (expertsPerDevice < 1)
            throw new ArgumentException($"--experts-per-device is {expertsPerDevice}; expected ≥ 1");
        var spec = (devices ?? "").Trim().ToLowerInvariant();
        if (spec is "" or "auto")
            return cudaDevices > 0
                ? Enumerable.Range(0, cudaDevices).Select(i => new DeviceSlot($"cuda:{i}", expertsPerDevice)).ToArray()
                : [new DeviceSlot("cpu", expertsPerDevice)];
        var slots = new List<DeviceSlot>();
        foreach (var raw in spec.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            string name;
            if (raw == "cpu") name = "cpu";
            else if (raw.StartsWith("cuda:") && int.TryParse(raw.AsSpan(5), out var n) && n >= 0)
            {
                if (n >= cudaDevices)
                    throw new ArgumentException(cudaDevices == 0
                        ? $"--devices names {raw} but libtorch sees no CUDA device here: this machine has none, or this is the CPU build " +
                          "(a GPU host builds with -p:MoeCuda=true, or MOE_CUDA=1 ./moe); use cpu or auto"
                        : $"--devices names {raw} but this machine has CUDA devices cuda:0..cuda:{cudaDevices - 1}");
                name = $"cuda:{n}";
            }
            else throw new ArgumentException($"--devices has '{raw}'; expected auto, cpu, or a comma-separated list such as cuda:0,cuda:1");
            if (slots.Any(s => s.Device == name)) throw new ArgumentException($"--devices names {name} twice");
            slots.Add(new DeviceSlot(name, expertsPerDevice));
        }
        return slots.ToArray();
    }
}
