namespace MoeCluster.Bench;

/// <summary>One layer shape and batch size that the benchmark times, and the arithmetic it costs.</summary>
public sealed record BenchConfig(string Name, int Tokens, LayerSpec Spec, int ForwardRepeats, int TrainRepeats)
{
    /// <summary>The name as <c>--config</c> takes it.</summary>
    public string Key => Name.Replace(' ', '-');

    /// <summary>The table's config column: the name and the batch.</summary>
    public string Label => $"{Name} T={Tokens}";

    /// <summary>The layer's shape, for the legend under the table.</summary>
    public string Shape => $"d={Spec.DModel} d_ff={Spec.DFF} E={Spec.NumExperts} k={Spec.TopK}, {Spec.WireDType} wire";

    /// <summary>
    /// Floating-point operations of one forward, counted as GEMMs only (2·m·n·k each):
    /// the gate x·W_g is 2·T·d·E, and every admitted assignment runs the expert's two d×d_ff
    /// GEMMs, 2·2·d·d_ff. The elementwise work (GELU, softmax, combine) is left out, so the share
    /// of the GEMM rate is a lower bound on how busy the arithmetic units are.
    /// </summary>
    public double ForwardFlops(long admittedAssignments) =>
        2.0 * Tokens * Spec.DModel * Spec.NumExperts + 4.0 * admittedAssignments * Spec.DModel * Spec.DFF;

    /// <summary>
    /// Forward, backward and step: backward costs two GEMMs per forward GEMM (∂input and
    /// ∂weights), so three times the forward; the optimizer step is elementwise and not counted.
    /// </summary>
    public double TrainFlops(long admittedAssignments) => 3 * ForwardFlops(admittedAssignments);

    /// <summary>
    /// Checkpoints are written every million steps here, i.e. never in a timed run: the reference
    /// layer writes none, and the checkpoint stores have their own benchmark.
    /// </summary>
    public const int NoCheckpoints = 1_000_000;

    public static IReadOnlyList<BenchConfig> All(bool quick)
    {
        var standard = new LayerSpec { DModel = 512, DFF = 2048, NumExperts = 8, TopK = 2, Seed = 1, CheckpointEvery = NoCheckpoints };
        var many = new LayerSpec { DModel = 128, DFF = 256, NumExperts = 256, TopK = 2, Seed = 1, CheckpointEvery = NoCheckpoints };
        return
        [
            new("standard f32", quick ? 1024 : 4096, standard, quick ? 2 : 7, quick ? 2 : 7),
            new("standard bf16 wire", quick ? 1024 : 4096, standard with { WireDType = TensorDType.BF16 }, quick ? 2 : 7, quick ? 2 : 7),
            // A 16-token forward is a latency: many samples for its p50. Its step (AdamW over all
            // of the layer's weights) costs as much as the standard batch's, so as many repeats.
            new("small batch", 16, standard, quick ? 20 : 200, quick ? 2 : 7),
            new("many experts", quick ? 1024 : 8192, many, quick ? 2 : 7, quick ? 2 : 7),
        ];
    }
}
