using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MoeCluster.Grains.Numerics;

namespace MoeCluster.Grains.Training;

/// <summary>
/// The gate's optimizer state when the gate gains or loses columns: each moment (AdamW's first
/// and second, SGD's momentum) keeps the columns of the experts that stay, copies a split
/// expert's parent's column, and starts at zero for a fresh expert. AdamW's step count belongs
/// to the whole gate tensor and carries over.
/// </summary>
public static class OptimizerColumns
{
    /// <summary>A new optimizer of <paramref name="spec"/> over <paramref name="gate"/>, its state taken from <paramref name="old"/>'s by <paramref name="sources"/>; <paramref name="old"/> is left as it was.</summary>
    public static optim.Optimizer Reshape(optim.Optimizer old, OptimizerSpec spec, Parameter gate, IReadOnlyList<int> sources)
    {
        var fresh = OptimizerFactory.Create(spec, [gate]);
        var from = Stateful(old).state_dict().State.Single();
        var to = Stateful(fresh).state_dict().State.Single();
        Tensor Columns(Tensor moment) => GateColumns.Select(moment, sources, _ => zeros(moment.shape[0], moment.dtype));
        switch (from, to)
        {
            case (AdamW.State a, AdamW.State b):
                b.step = a.step;
                b.exp_avg.Dispose();
                b.exp_avg = Columns(a.exp_avg);
                b.exp_avg_sq.Dispose();
                b.exp_avg_sq = Columns(a.exp_avg_sq);
                break;
            case (SGD.State a, SGD.State b):
                b.momentum_buffer?.Dispose();
                b.momentum_buffer = a.momentum_buffer is null ? null : Columns(a.momentum_buffer);
                break;
            default:
                fresh.Dispose();
                throw new NotSupportedException($"the optimizer state {from.GetType().Name} cannot be reshaped; expected AdamW or SGD");
        }
        return fresh;
    }

    // AdamW and SGD derive from OptimizerHelper, which exposes the live per-parameter states.
    private static OptimizerHelper Stateful(optim.Optimizer optimizer) => optimizer as OptimizerHelper
        ?? throw new NotSupportedException($"optimizer {optimizer.GetType().Name} has no per-parameter state to reshape");
}
