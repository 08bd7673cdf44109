using System.Text.Json;
using Spectre.Console;

namespace MoeCluster.Bench;

/// <summary>The benchmark's one table, and the same rows as JSON.</summary>
public static class BenchOutput
{
    public static void WriteTable(BenchReport report, IEnumerable<BenchConfig> configs)
    {
        var table = new Table().AddColumns("config", "mode", "median ms", "tokens/s", "ratio to (a)", "share of GEMM rate");
        foreach (var r in report.Rows)
            table.AddRow(Markup.Escape(r.Config), Markup.Escape(r.Mode), $"{r.MedianMs:F2}", $"{r.TokensPerSecond:N0}",
                r.RatioToReference is { } ratio ? $"{ratio:F3}" : "", $"{r.GemmShare:P1}");
        AnsiConsole.Write(table);
        foreach (var c in configs) AnsiConsole.WriteLine($"{c.Label}: {c.Shape}");
        AnsiConsole.WriteLine($"libtorch float32 GEMM rate: {report.GemmGflops:F1} GFLOP/s; {report.Machine}");
        var faulted = report.Rows.Where(r => r.PageFaults is not null && r.Setup is "a" or "b").ToList();
        if (faulted.Count > 0)
            AnsiConsole.WriteLine("minor page faults per call in this process, median: " +
                string.Join(", ", faulted.Select(r => $"{r.Config} {r.Mode} {r.PageFaults:N0}")));
        var jitMs = report.Rows.Sum(r => r.JitMs ?? 0);
        AnsiConsole.WriteLine($"JIT compilation in this process during the timed calls: {jitMs:F0} ms in all; " +
            $"{SteadyStateJit.Describe()}, so the warm-up calls compile what the rows run");
        AnsiConsole.WriteLine("peak resident memory: " + string.Join(", ", report.PeakMemoryMiB.Select(p => $"{p.Key} {p.Value:F0} MiB")));
    }

    public static async Task WriteJsonAsync(string path, BenchReport report)
    {
        await using var file = File.Create(path);
        await JsonSerializer.SerializeAsync(file, report, new JsonSerializerOptions { WriteIndented = true });
    }
}
