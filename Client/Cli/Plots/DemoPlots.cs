using ScottPlot;

namespace MoeCluster.Cli.Plots;

/// <summary>
/// The demo's two PNGs: the training loss per step, and the tokens each expert was sent per step
/// (averaged over windows of steps, so that 8 lines stay readable over hundreds of steps).
/// </summary>
public static class DemoPlots
{
    public const int Width = 900, Height = 500;

    /// <summary>Writes <c>loss.png</c> and <c>tokens-per-expert.png</c> into <paramref name="directory"/>; returns their paths.</summary>
    public static string[] Write(string directory, IReadOnlyList<double> losses, IReadOnlyList<long[]> routedPerStep)
    {
        Directory.CreateDirectory(directory);
        var loss = Path.GetFullPath(Path.Combine(directory, "loss.png"));
        var tokens = Path.GetFullPath(Path.Combine(directory, "tokens-per-expert.png"));
        LossCurve(losses).SavePng(loss, Width, Height);
        TokensPerExpert(routedPerStep).SavePng(tokens, Width, Height);
        return [loss, tokens];
    }

    public static Plot LossCurve(IReadOnlyList<double> losses)
    {
        var plot = new Plot();
        var steps = Enumerable.Range(1, losses.Count).Select(s => (double)s).ToArray();
        var line = plot.Add.Scatter(steps, losses.ToArray());
        line.MarkerSize = 0;
        plot.Title("training loss (cross-entropy, without the aux loss)");
        plot.XLabel("step");
        plot.YLabel("loss");
        return plot;
    }

    public static Plot TokensPerExpert(IReadOnlyList<long[]> routedPerStep)
    {
        var plot = new Plot();
        if (routedPerStep.Count == 0) return plot;
        var experts = routedPerStep[0].Length;
        var window = Math.Max(1, routedPerStep.Count / 50);
        var windows = (routedPerStep.Count + window - 1) / window;
        var x = Enumerable.Range(0, windows).Select(w => w * window + Math.Min(window, routedPerStep.Count - w * window) / 2.0 + 0.5).ToArray();
        for (int e = 0; e < experts; e++)
        {
            var y = Enumerable.Range(0, windows)
                .Select(w => routedPerStep.Skip(w * window).Take(window).Average(r => (double)r[e])).ToArray();
            var line = plot.Add.Scatter(x, y);
            line.MarkerSize = 0;
            line.LegendText = $"expert {e}";
        }
        plot.Title(window == 1 ? "tokens routed to each expert per step" : $"tokens routed to each expert per step (mean of {window} steps)");
        plot.XLabel("step");
        plot.YLabel("tokens");
        plot.ShowLegend(Edge.Right);
        return plot;
    }
}
