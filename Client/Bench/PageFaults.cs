namespace MoeCluster.Bench;

/// <summary>
/// This process's minor page faults so far (field 10 of /proc/self/stat): memory touched for the
/// first time since it was mapped, such as a tensor or array the allocator took from the system
/// afresh instead of reusing freed memory. −1 where /proc cannot be read.
/// </summary>
public static class PageFaults
{
    public static long Minor()
    {
        try
        {
            var stat = File.ReadAllText("/proc/self/stat");
            // The command name (field 2) is in parentheses and may hold spaces: count from after it.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(fields[7], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return -1;
        }
    }
}
