using System.CommandLine;
using System.Globalization;

namespace MoeCluster.Cli.Lm;

/// <summary>The model and training options that <c>lm train</c>, <c>lm sweep</c> and <c>lm bench</c> share.</summary>
public sealed class LmModelOptions
{
    private static readonly LmConfig C = new();
    private static readonly LmTrainSettings S = new();

    public Option<int> Layers { get; } = new("--layers") { Description = "Transformer blocks", DefaultValueFactory = _ => C.Layers };
    public Option<int> DModel { get; } = new("--d-model") { Description = "Width of the model", DefaultValueFactory = _ => C.DModel };
    public Option<int> Heads { get; } = new("--heads") { Description = "Attention heads", DefaultValueFactory = _ => C.Heads };
    public Option<int> DFF { get; } = new("--d-ff") { Description = "Hidden width of each FFN and each expert", DefaultValueFactory = _ => C.DFF };
    public Option<int> Context { get; } = new("--context") { Description = "Bytes of context", DefaultValueFactory = _ => C.Context };
    public Option<int> MoeEvery { get; } = new("--moe-every") { Description = "1: every FFN is an MoE layer; 2: every other one", DefaultValueFactory = _ => C.MoeEvery };
    public Option<double> CapacityFactor { get; } = new("--capacity-factor") { Description = "The MoE layers' capacity factor in training", DefaultValueFactory = _ => C.CapacityFactor };
    public Option<int> Batch { get; } = new("--batch") { Description = "Windows of context bytes per step", DefaultValueFactory = _ => S.Batch };
    public Option<double> LearningRate { get; } = new("--lr") { Description = "AdamW's learning rate, in this process and in the layers", DefaultValueFactory = _ => S.LearningRate };
    public Option<int> EvalEvery { get; } = new("--eval-every") { Description = "Steps between validation losses", DefaultValueFactory = _ => S.EvalEvery };
    public Option<int> EvalWindows { get; } = new("--eval-windows") { Description = "Validation windows per validation loss", DefaultValueFactory = _ => S.EvalWindows };
    public Option<int> CheckpointEvery { get; } = new("--checkpoint-every") { Description = "Steps between the run's checkpoints", DefaultValueFactory = _ => S.CheckpointEvery };
    public Option<string> LayerPrefix { get; } = new("--layer-prefix") { Description = "The cluster layers are named PREFIX-ffn-BLOCK", DefaultValueFactory = _ => S.LayerPrefix };
    public Option<int> Silos { get; } = new("--silos") { Description = "Silos of the embedded cluster", DefaultValueFactory = _ => new LmTrainOptions().Silos };
    public Option<int?> Threads { get; } = new("--threads") { Description = "libtorch threads in this process (1: runs repeat bit for bit)" };
    public Option<string> Text { get; } = new("--text") { Description = "The directory of the fortunes text", DefaultValueFactory = _ => FortuneText.DefaultDirectory };

    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { Layers, DModel, Heads, DFF, Context, MoeEvery, CapacityFactor, Batch, LearningRate, EvalEvery, EvalWindows,
                     CheckpointEvery, LayerPrefix, Silos, Threads, Text })
            command.Options.Add(o);
    }

    public LmConfig Config(ParseResult parse, int experts, long seed) => new LmConfig
    {
        Layers = parse.GetValue(Layers), DModel = parse.GetValue(DModel), Heads = parse.GetValue(Heads), DFF = parse.GetValue(DFF),
        Context = parse.GetValue(Context), MoeEvery = parse.GetValue(MoeEvery), CapacityFactor = parse.GetValue(CapacityFactor),
        Experts = experts, Seed = seed,
    }.Validate();

    public LmTrainSettings Settings(ParseResult parse, bool inProcess) => new LmTrainSettings
    {
        Batch = parse.GetValue(Batch), LearningRate = parse.GetValue(LearningRate), EvalEvery = parse.GetValue(EvalEvery),
        EvalWindows = parse.GetValue(EvalWindows), CheckpointEvery = parse.GetValue(CheckpointEvery), LayerPrefix = parse.GetValue(LayerPrefix)!,
        InProcess = inProcess,
    }.Validate();

    public LmTrainOptions Options(ParseResult parse, int experts, long seed, int steps, bool inProcess) => new()
    {
        Config = Config(parse, experts, seed), Settings = Settings(parse, inProcess), Steps = steps,
        Silos = parse.GetValue(Silos), Threads = parse.GetValue(Threads), TextDirectory = parse.GetValue(Text)!,
    };

    /// <summary>A comma-separated list of numbers, such as 0,2,4,8,16.</summary>
    public static long[] ParseList(string text, string option, long min)
    {
        var values = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(t =>
            long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) && v >= min ? v
            : throw new ArgumentException($"{option} has \"{t}\"; expected comma-separated numbers of at least {min}")).ToArray();
        if (values.Length == 0) throw new ArgumentException($"{option} is empty; expected comma-separated numbers");
        return values.Distinct().ToArray();
    }
}
