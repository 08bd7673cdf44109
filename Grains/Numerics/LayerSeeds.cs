namespace MoeCluster.Grains.Numerics;

/// <summary>The seeds of a layer's parts, so that every builder of (seed, layer) agrees on its weights.</summary>
public static class LayerSeeds
{
    public static long Gate(long seed, string layer) => DeterministicSeed.For(seed, layer, "gate");
    public static long Expert(long seed, string layer, int index) => DeterministicSeed.For(seed, layer, "expert", index);
    public static long Jitter(long seed, string layer, long batchId) => DeterministicSeed.For(seed, layer, "jitter", batchId);
}
