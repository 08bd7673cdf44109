using Spectre.Console;

namespace MoeCluster.Bench;

/// <summary>
/// The targets for this 2-core machine, read off one run's rows: each with the value
/// measured and whether it is met. A target whose rows were not run (--config) is left out.
/// </summary>
public static class BenchTargets
{
    public static void Write(BenchReport report)
    {
        var table = new Table().AddColumns("target", "measured", "met");
        void Add(string target, double? value, Func<double, string> format, Func<double, bool> met)
        {
            if (value is { } v) table.AddRow(Markup.Escape(target), format(v), met(v) ? "yes" : "no");
        }
        BenchRow? Row(string configKey, string setup, string mode) => report.Rows.FirstOrDefault(r =>
            r.Config.StartsWith(configKey.Replace('-', ' ') + " T=", StringComparison.Ordinal) && r.Setup == setup && r.Mode.EndsWith(mode, StringComparison.Ordinal));

        Add("(b) / (a) ≤ 1.10, standard fwd+bwd+step", Row("standard-f32", "b", ClusterBenchmark.Train)?.RatioToReference, v => $"{v:F3}", v => v <= 1.10);
        Add("(c) / (a) ≤ 1.30, standard fwd+bwd+step", Row("standard-f32", "c", ClusterBenchmark.Train)?.RatioToReference, v => $"{v:F3}", v => v <= 1.30);
        Add("(b) ≥ 70 % of the GEMM rate, standard fwd+bwd+step", Row("standard-f32", "b", ClusterBenchmark.Train)?.GemmShare, v => $"{v:P1}", v => v >= 0.70);
        // Beside the 16-token times: reading the experts' weights once, which no 16-token forward can beat.
        var floor = report.WeightsReadMs is { } read ? $" (weights read once: {read:F2} ms)" : "";
        Add("16-token forward p50 ≤ 1 ms in (b)", Row("small-batch", "b", ClusterBenchmark.Forward)?.MedianMs, v => $"{v:F2} ms{floor}", v => v <= 1);
        Add("16-token forward p50 ≤ 2 ms in (c)", Row("small-batch", "c", ClusterBenchmark.Forward)?.MedianMs, v => $"{v:F2} ms{floor}", v => v <= 2);
        var manyA = Row("many-experts", "a", ClusterBenchmark.Train);
        var manyB = Row("many-experts", "b", ClusterBenchmark.Train);
        Add("many experts: (b) tokens/s within 1.5× of (a), fwd+bwd+step", manyA is null || manyB is null ? null : manyA.TokensPerSecond / manyB.TokensPerSecond,
            v => $"(a)/(b) tokens/s {v:F2}", v => v <= 1.5);
        report.PeakMemoryMiB.TryGetValue(MemoryProbe.ReferenceLabel, out var referenceMiB);
        report.PeakMemoryMiB.TryGetValue(MemoryProbe.SiloLabel, out var siloMiB);
        Add("(b) silo peak memory ≤ 1.5× the reference process's", referenceMiB > 0 && siloMiB > 0 ? siloMiB / referenceMiB : null,
            v => $"{siloMiB:F0} / {referenceMiB:F0} MiB = {v:F2}", v => v <= 1.5);
        if (table.Rows.Count > 0) AnsiConsole.Write(table);
    }
}
