using System.Text;

namespace MoeCluster.Grains.Numerics;

/// <summary>
/// Derives independent, stable seeds from a base seed and names, so that every process that builds
/// (seed, layer, part, index) gets the same random stream: an expert initialises identically
/// wherever it is activated, and a replayed micro-batch draws the same jitter noise.
/// </summary>
public static class DeterministicSeed
{
    public static long For(long seed, string layer, string part, long index = 0)
    {
        // FNV-1a over the UTF-8 names, then SplitMix64 to spread the bits. string.GetHashCode is
        // randomised per process, so it cannot be used here.
        ulong h = 14695981039346656037UL;
        void Mix(ReadOnlySpan<byte> bytes)
        {
            foreach (var b in bytes) { h ^= b; h *= 1099511628211UL; }
            h ^= 0xff; h *= 1099511628211UL; // separator, so ("ab","c") differs from ("a","bc")
        }
        Mix(BitConverter.GetBytes(seed));
        Mix(Encoding.UTF8.GetBytes(layer));
        Mix(Encoding.UTF8.GetBytes(part));
        Mix(BitConverter.GetBytes(index));
        return (long)(SplitMix64(h) & 0x7FFF_FFFF_FFFF_FFFFUL);
    }

    private static ulong SplitMix64(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
