using System.CommandLine;
using System.Globalization;

namespace MoeCluster.Cli;

/// <summary>The options that freeze parts of a layer and set their learning rates, as <see cref="TrainingControls"/>.</summary>
public sealed class TrainingControlOptions
{
    public Option<bool> FreezeRouter { get; } = new("--freeze-router") { Description = "Do not train the router (its gate stays bit-identical)" };

    public Option<string?> FreezeExperts { get; } = new("--freeze-experts")
    {
        Description = "Experts not to train: all, or indices such as 0,3",
        HelpName = "all|i,j,…",
    };

    public Option<double?> RouterLr { get; } = new("--router-lr") { Description = "The router's own learning rate (default: the layer's)" };

    public Option<string?> ExpertLrMultipliers { get; } = new("--expert-lr")
    {
        Description = "Learning-rate multipliers per expert, such as 0=0.5,3=2 (others 1)",
        HelpName = "i=m,…",
    };

    public void AddTo(Command command)
    {
        command.Options.Add(FreezeRouter);
        command.Options.Add(FreezeExperts);
        command.Options.Add(RouterLr);
        command.Options.Add(ExpertLrMultipliers);
    }

    /// <summary>The controls the options ask for, or null when none was given.</summary>
    public TrainingControls? Controls(ParseResult parse)
    {
        var freezeRouter = parse.GetValue(FreezeRouter);
        var frozen = parse.GetValue(FreezeExperts);
        var routerLr = parse.GetValue(RouterLr);
        var multipliers = parse.GetValue(ExpertLrMultipliers);
        if (!freezeRouter && frozen is null && routerLr is null && multipliers is null) return null;
        return new TrainingControls
        {
            FreezeRouter = freezeRouter,
            FreezeExperts = frozen?.Trim() == "all",
            FrozenExperts = frozen is null || frozen.Trim() == "all" ? [] : frozen.Split(',').Select(i => ParseIndex(i, "--freeze-experts")).ToArray(),
            RouterLearningRate = routerLr,
            ExpertLearningRateMultipliers = multipliers is null ? new Dictionary<int, double>() : multipliers.Split(',').Select(ParseMultiplier).ToDictionary(p => p.Expert, p => p.Factor),
        };
    }

    private static int ParseIndex(string text, string option) =>
        int.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var i) ? i
        : throw new ArgumentException($"{option} has \"{text}\"; expected all, or expert indices such as 0,3");

    private static (int Expert, double Factor) ParseMultiplier(string pair)
    {
        var parts = pair.Split('=');
        if (parts.Length != 2 || !double.TryParse(parts[1].Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var factor))
            throw new ArgumentException($"--expert-lr has \"{pair}\"; expected expert=multiplier pairs such as 0=0.5,3=2");
        return (ParseIndex(parts[0], "--expert-lr"), factor);
    }
}
