using System.Diagnostics;
using MoeCluster.Grains.Compute;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MoeCluster.Bench;

/// <summary>
/// The before/after of the expert's product layout (ExpertFfn.WeightsFirst): one forward of every
/// expert of the layer in turn, so that each finds its weights out of cache as in a layer forward,
/// computed as torch's Linear computes it (u·Wᵀ) and weights-first (W·uᵀ, transposed back), as the
/// experts compute it up to <see cref="MoeCluster.Grains.Numerics.ExpertFfn.WeightsFirstMaxRows"/>
/// rows, for several rows per expert. Same weights, same arithmetic; p50 of alternating repeats.
/// </summary>
public static class ExpertProductLayouts
{
    public static readonly int[] Rows = [4, 16, 64, 256, 1024];

    public static Task RunAsync(ComputeQueue queue, LayerSpec spec, int repeats) => queue.RunAsync(() =>
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var generator = new Generator(11);
        var experts = Enumerable.Range(0, spec.NumExperts).Select(_ => (
            W1: randn(spec.DFF, spec.DModel, generator: generator), B1: randn(spec.DFF, generator: generator),
            W2: randn(spec.DModel, spec.DFF, generator: generator), B2: randn(spec.DModel, generator: generator))).ToArray();
        Console.WriteLine($"{spec.NumExperts} experts' forwards in turn (d={spec.DModel} d_ff={spec.DFF}), by the layout of their products:");
        foreach (var rows in Rows)
        {
            var u = randn(rows, spec.DModel, generator: generator);
            void InputFirst()
            {
                using var inner = NewDisposeScope();
                foreach (var e in experts) functional.linear(functional.gelu(functional.linear(u, e.W1, e.B1)), e.W2, e.B2);
            }
            void WeightsFirst()
            {
                using var inner = NewDisposeScope();
                foreach (var e in experts)
                    addmm(e.B2.unsqueeze(1), e.W2, functional.gelu(addmm(e.B1.unsqueeze(1), e.W1, u.t(), 1, 1)), 1, 1).t();
            }
            var n = rows >= 256 ? Math.Max(3, repeats / 10) : repeats;
            var (linear, transposed) = (new List<double>(), new List<double>());
            InputFirst(); WeightsFirst(); // warm-up
            for (int i = 0; i < n; i++)
            {
                linear.Add(Milliseconds(InputFirst));
                transposed.Add(Milliseconds(WeightsFirst));
            }
            double p50(List<double> v) { v.Sort(); return v[v.Count / 2]; }
            var (a, b) = (p50(linear), p50(transposed));
            Console.WriteLine($"  {rows,5} rows per expert   u·Wᵀ (torch's Linear) p50 {a,9:F3} ms   W·uᵀ (weights-first) p50 {b,9:F3} ms   {a / b:F2}×");
        }
    });

    private static double Milliseconds(Action work)
    {
        var watch = Stopwatch.StartNew();
        work();
        return watch.Elapsed.TotalMilliseconds;
    }
}
