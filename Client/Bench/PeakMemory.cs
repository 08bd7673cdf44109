namespace MoeCluster.Bench;

/// <summary>A process's peak resident set (VmHWM in /proc/PID/status), in MiB.</summary>
public static class PeakMemory
{
    public static double MiB(int processId)
    {
        var path = $"/proc/{processId}/status";
        foreach (var line in File.ReadLines(path))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) / 1024.0;
        throw new InvalidOperationException($"{path} has no VmHWM line; expected Linux's /proc status format");
    }
}
