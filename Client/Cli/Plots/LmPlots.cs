using MoeCluster.Cli.Lm;
using ScottPlot;

namespace MoeCluster.Cli.Plots;

/// <summary>The language model's PNGs: one run's losses per step, and a sweep's validation losses per expert count.</summary>
public static class LmPlots
{
    public const int Width = 900, Height = 500;

    /// <summary>Training loss (mean over windows of steps) and validation loss against step.</summary>
    public static string WriteRun(string path, LmHistory history, string title)
    {
        var plot = new Plot();
        if (history.Train.Count > 0)
        {
            var window = Math.Max(1, history.Train.Count / 100);
            var windows = (history.Train.Count + window - 1) / window;
            var x = Enumerable.Range(0, windows).Select(w => (double)Math.Min(history.Train.Count, (w + 1) * window)).ToArray();
            var y = Enumerable.Range(0, windows).Select(w => history.Train.Skip(w * window).Take(window).Average()).ToArray();
            var train = plot.Add.Scatter(x, y);
            train.MarkerSize = 0;
            train.LegendText = window == 1 ? "training" : $"training (mean of {window} steps)";
        }
        if (history.Validation.Count > 0)
        {
            var validation = plot.Add.Scatter(history.Validation.Select(p => (double)p.Step).ToArray(), history.Validation.Select(p => p.Loss).ToArray());
            validation.LegendText = "validation";
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("cross-entropy (nats per byte)");
        plot.ShowLegend(Edge.Right);
        var full = Path.GetFullPath(path);
        plot.SavePng(full, Width, Height);
        return full;
    }

    /// <summary>Validation loss against step, one line per expert count (0: dense).</summary>
    public static string WriteSweep(string path, IReadOnlyList<(int Experts, IReadOnlyList<LmValidationPoint> Points)> curves, string title)
    {
        var plot = new Plot();
        foreach (var (experts, points) in curves)
        {
            var line = plot.Add.Scatter(points.Select(p => (double)p.Step).ToArray(), points.Select(p => p.Loss).ToArray());
            line.LegendText = experts == 0 ? "dense" : $"{experts} experts";
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("validation cross-entropy (nats per byte)");
        plot.ShowLegend(Edge.Right);
        var full = Path.GetFullPath(path);
        plot.SavePng(full, Width, Height);
        return full;
    }
}
