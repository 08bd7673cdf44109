using ScottPlot;

namespace MoeCluster.Cli;

/// <summary>The PNG charts of <c>inspect</c> (experts × classes) and <c>sweep</c> (final loss against experts).</summary>
public static class Charts
{
    /// <summary>Each expert's row: the share of its admitted tokens in each class.</summary>
    public static void SpecializationHeatMap(SpecializationReport report, string path)
    {
        if (report.Classes == 0)
            throw new InvalidOperationException($"layer \"{report.Layer}\" has no labelled tokens with classes yet; forward with TokenLabels (classes) first");
        int experts = report.Experts.Length, classes = report.Classes;
        var shares = new double[experts, classes];
        for (int e = 0; e < experts; e++)
        {
            double total = report.Experts[e].ClassCounts.Sum();
            for (int c = 0; c < classes; c++) shares[e, c] = total == 0 ? 0 : report.Experts[e].ClassCounts[c] / total;
        }
        var plot = new Plot();
        var map = plot.Add.Heatmap(shares);
        map.Colormap = new ScottPlot.Colormaps.Viridis();
        // Row 0 of the array is drawn at the top, at y = experts − 1: expert 0 heads the map, as in the table.
        plot.Add.ColorBar(map).Label = "share of the expert's tokens";
        plot.Title($"Layer \"{report.Layer}\" v{report.Version}: classes each expert receives");
        plot.XLabel("class");
        plot.YLabel("expert");
        plot.Axes.Bottom.TickGenerator = Ticks(classes, i => i);
        plot.Axes.Left.TickGenerator = Ticks(experts, y => experts - 1 - y);
        plot.SavePng(path, 160 + 60 * classes, 140 + Math.Max(30, 40 * Math.Min(experts, 32)));
    }

    /// <summary>Final loss against the number of experts, on a log2 axis.</summary>
    public static void LossAgainstExperts(IReadOnlyList<(int Experts, double FinalLoss)> points, int topK, int steps, string path)
    {
        var plot = new Plot();
        var xs = points.Select(p => Math.Log2(p.Experts)).ToArray();
        var line = plot.Add.Scatter(xs, points.Select(p => p.FinalLoss).ToArray());
        line.MarkerSize = 8;
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        foreach (var p in points) ticks.AddMajor(Math.Log2(p.Experts), $"{p.Experts}");
        plot.Axes.Bottom.TickGenerator = ticks;
        plot.Title($"Final loss against experts (top-{topK}, {steps} steps)");
        plot.XLabel("experts (log scale)");
        plot.YLabel("final loss (mean of the last steps)");
        plot.SavePng(path, 640, 440);
    }

    private static ScottPlot.TickGenerators.NumericManual Ticks(int count, Func<int, int> label)
    {
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        var every = Math.Max(1, count / 16);
        for (int i = 0; i < count; i += every) ticks.AddMajor(i, $"{label(i)}");
        return ticks;
    }
}
