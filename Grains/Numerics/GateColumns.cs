using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Numerics;

/// <summary>
/// The gate of a layer whose experts change (DESIGN.md, Elasticity): its columns are kept,
/// copied (a split expert starts with its parent's column) or drawn fresh, and dropped with a
/// removed expert. The reference layer and the router reshape their gates with the same code.
/// </summary>
public static class GateColumns
{
    /// <summary>A fresh expert's gate column: U(−1/√d, 1/√d) like the first gate, drawn in Float32 from the column's own seed.</summary>
    public static Tensor Fresh(int dModel, long seed)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator((ulong)seed);
        var bound = 1.0 / Math.Sqrt(dModel);
        return rand([dModel], ScalarType.Float32, generator: generator).mul_(2 * bound).sub_(bound).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// A new [rows, sources.Length] matrix: column j is column <c>sources[j]</c> of
    /// <paramref name="old"/>, or <paramref name="fresh"/>(j) ([rows]) where <c>sources[j]</c> is −1.
    /// </summary>
    public static Tensor Select(Tensor old, IReadOnlyList<int> sources, Func<int, Tensor> fresh)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var columns = new Tensor[sources.Count];
        for (int j = 0; j < sources.Count; j++)
        {
            if (sources[j] >= old.shape[1])
                throw new ArgumentException($"column {j} comes from column {sources[j]}; the matrix has {old.shape[1]}");
            columns[j] = sources[j] >= 0 ? old.select(1, sources[j]) : fresh(j).to(old.dtype, old.device);
        }
        var result = columns.Length == 0 ? empty(old.shape[0], 0, old.dtype, old.device) : stack(columns, 1);
        return result.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>The gate as a new parameter, with the columns <paramref name="sources"/> names (see <see cref="Select"/>).</summary>
    public static Parameter Reshape(Tensor gate, IReadOnlyList<int> sources, Func<int, Tensor> fresh)
    {
        var values = Select(gate.detach(), sources, fresh);
        return new Parameter(values);
    }
}
