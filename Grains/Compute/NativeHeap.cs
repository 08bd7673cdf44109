using System.Runtime.InteropServices;

namespace MoeCluster.Grains.Compute;

/// <summary>
/// Keeps libtorch's freed tensor memory in the process for the next tensor. glibc's malloc serves
/// blocks above a threshold that grows only to the largest block freed so far with mmap, and
/// returns each to the system when it is freed; the next tensor of that size then faults in fresh
/// zeroed pages. A training step of the standard layer allocates and frees tens of megabytes per
/// expert, and took 14,000–17,000 page faults per step in the reference layer alone. With blocks
/// up to glibc's largest threshold (32 MiB) served from the heap, and the heap's top not trimmed
/// below 512 MiB, the same step takes about 550 (<c>./moe bench</c> prints the faults per step).
/// Process-wide; applied by every silo at start and by the benchmark's reference process.
/// </summary>
public static class NativeHeap
{
    private const int MallocTrimThreshold = -1;  // M_TRIM_THRESHOLD
    private const int MallocMmapThreshold = -3;  // M_MMAP_THRESHOLD
    /// <summary>glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).</summary>
    public const int MmapThresholdBytes = 32 << 20;
    public const int TrimThresholdBytes = 512 << 20;

    [DllImport("libc", EntryPoint = "mallopt")]
    private static extern int Mallopt(int parameter, int value);

    private static readonly Lazy<bool> Applied = new(() =>
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            return Mallopt(MallocMmapThreshold, MmapThresholdBytes) == 1 & Mallopt(MallocTrimThreshold, TrimThresholdBytes) == 1;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            return false; // not glibc (musl has no mallopt): its allocator keeps its own policy
        }
    });

    /// <summary>Tunes the allocator once per process; false where it is not glibc's.</summary>
    public static bool Retain() => Applied.Value;

    /// <summary>Minor page faults of this process so far (field 10 of /proc/self/stat); −1 where there is none.</summary>
    public static long MinorFaults()
    {
        try
        {
            var stat = File.ReadAllText("/proc/self/stat");
            // The command name (field 2) is in parentheses and may hold spaces: count from after it.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(fields[7]);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return -1;
        }
    }
}
