using ScottPlot;

namespace MoeCluster.Bench.Plots;

/// <summary>
/// The benchmark's ratios as a bar chart (PNG): the cluster's time over the reference layer's for each
/// timed row, with a line at 1 (as fast as the reference).
/// </summary>
public static class BenchRatioPlot
{
    /// <summary>Writes the chart to <paramref name="path"/> and returns its full path.</summary>
    public static string Write(string path, IReadOnlyList<(string Label, double Ratio)> ratios)
    {
        if (ratios.Count == 0) throw new ArgumentException("no ratios to plot; expected at least one row timed against the reference");
        var plot = new Plot();
        var bars = plot.Add.Bars(ratios.Select(r => r.Ratio).ToArray());
        foreach (var (bar, i) in bars.Bars.Select((b, i) => (b, i))) bar.Label = $"{ratios[i].Ratio:F2}";
        bars.ValueLabelStyle.FontSize = 14;
        plot.Add.HorizontalLine(1.0, pattern: LinePattern.Dashed);
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, ratios.Count).Select(i => (double)i).ToArray(), ratios.Select(r => r.Label).ToArray());
        plot.Axes.Margins(bottom: 0);
        plot.Title("time through the cluster / time of the reference layer (lower is better)");
        plot.YLabel("ratio");
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        plot.SavePng(full, Math.Max(600, 220 * ratios.Count), 500);
        return full;
    }
}
