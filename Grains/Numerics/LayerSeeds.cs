namespace MoeCluster.Grains.Numerics;

/// <summary>The seeds of a layer's parts, so that every builder of (seed, layer) agrees on its weights.</summary>
public static class LayerSeeds
{
    public static long Gate(long seed, string layer) => DeterministicSeed.For(seed, layer, "gate");
    public static long Expert(long seed, string layer, int index) => DeterministicSeed.For(seed, layer, "expert", index);
    /// <summary>The gate column of an expert added fresh to a running layer.</summary>
    public static long GateColumn(long seed, string layer, int id) => DeterministicSeed.For(seed, layer, "gate-column", id);
    public static long Jitter(long seed, string layer, long batchId) => DeterministicSeed.For(seed, layer, "jitter", batchId);

    /// <summary>
    /// The expert-dropout mask of one expert in one training micro-batch of one step: a rerun, a
    /// recomputation in backward and a replay after failover all draw the same mask.
    /// </summary>
    public static long ExpertDropout(long seed, string layer, long step, long batchId, int expert) =>
        DeterministicSeed.For(DeterministicSeed.For(seed, layer, "expert-dropout", step), layer, $"batch {batchId}", expert);
}
