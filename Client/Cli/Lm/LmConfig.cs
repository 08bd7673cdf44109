using System.Text.Json;
using System.Text.Json.Serialization;
using MoeCluster.Client;

namespace MoeCluster.Cli.Lm;

/// <summary>
/// The shape of the byte-level Switch Transformer language model: a decoder-only Transformer
/// (pre-LayerNorm, learned positions) whose FFNs are, every <see cref="MoeEvery"/>-th one, MoE
/// layers with top-1 routing. <see cref="Experts"/> = 0 is the dense baseline: the same FFN
/// (d → d_ff → d, GELU) in every block, so the same FLOPs per token as a top-1 expert.
/// </summary>
public sealed record LmConfig
{
    public const int Vocabulary = 256;

    [JsonPropertyName("layers")] public int Layers { get; init; } = 4;
    [JsonPropertyName("d_model")] public int DModel { get; init; } = 128;
    [JsonPropertyName("heads")] public int Heads { get; init; } = 4;
    [JsonPropertyName("d_ff")] public int DFF { get; init; } = 512;
    [JsonPropertyName("context")] public int Context { get; init; } = 128;
    /// <summary>Experts per MoE layer; 0: every FFN dense.</summary>
    [JsonPropertyName("experts")] public int Experts { get; init; } = 8;
    /// <summary>1: every FFN is an MoE layer; 2: every other one (blocks 1, 3, …), the rest dense.</summary>
    [JsonPropertyName("moe_every")] public int MoeEvery { get; init; } = 1;
    [JsonPropertyName("capacity_factor")] public double CapacityFactor { get; init; } = 1.25;
    [JsonPropertyName("eval_capacity_factor")] public double EvalCapacityFactor { get; init; } = 2.0;
    [JsonPropertyName("aux_loss_weight")] public double AuxLossWeight { get; init; } = 0.01;
    [JsonPropertyName("z_loss_weight")] public double ZLossWeight { get; init; } = 0.001;
    [JsonPropertyName("seed")] public long Seed { get; init; } = 1;

    public LmConfig Validate()
    {
        if (Layers < 1) throw new ArgumentException($"--layers is {Layers}; expected at least 1");
        if (DModel < 1 || Heads < 1 || DModel % Heads != 0)
            throw new ArgumentException($"--d-model {DModel} with --heads {Heads}: expected d_model a positive multiple of heads");
        if (DFF < 1) throw new ArgumentException($"--d-ff is {DFF}; expected at least 1");
        if (Context < 2) throw new ArgumentException($"--context is {Context}; expected at least 2");
        if (Experts is < 0 or 1) throw new ArgumentException($"--experts is {Experts}; expected 0 (dense) or at least 2");
        if (MoeEvery < 1) throw new ArgumentException($"--moe-every is {MoeEvery}; expected 1 (every FFN) or more");
        return this;
    }

    /// <summary>Whether block <paramref name="block"/>'s FFN is an MoE layer.</summary>
    public bool IsMoe(int block) => Experts > 0 && (block + 1) % MoeEvery == 0;

    public IEnumerable<int> MoeBlocks => Enumerable.Range(0, Layers).Where(IsMoe);

    /// <summary>The cluster layer of block <paramref name="block"/>: top-1 Switch routing, the router in fp32.</summary>
    public LayerSpec LayerSpec(int block, OptimizerSpec optimizer, int checkpointEvery) => new()
    {
        DModel = DModel, DFF = DFF, NumExperts = Experts, TopK = 1, Normalize = false,
        CapacityFactor = CapacityFactor, EvalCapacityFactor = EvalCapacityFactor,
        AuxLossWeight = AuxLossWeight, ZLossWeight = ZLossWeight,
        Seed = Seed + block, Optimizer = optimizer, CheckpointEvery = checkpointEvery,
    };

    public string ToJson() => JsonSerializer.Serialize(this);
    public static LmConfig FromJson(string json) => JsonSerializer.Deserialize<LmConfig>(json)!.Validate();
}
