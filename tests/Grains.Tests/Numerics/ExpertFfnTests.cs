using MoeCluster.Grains.Numerics;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MoeCluster.Grains.Tests.Numerics;

/// <summary>
/// The expert FFN against its formula written out with plain products, on both sides of the row
/// count where it switches from torch's Linear to weights-first products: outputs and every
/// gradient (input and parameters), with and without a dropout mask. The layer tests cannot catch
/// a wrong FFN: the reference and the cluster share this class.
/// </summary>
public class ExpertFfnTests
{
    private const int DModel = 16, DFF = 40;

    public static TheoryData<ExpertActivation, int, bool> Cases()
    {
        var data = new TheoryData<ExpertActivation, int, bool>();
        foreach (var activation in new[] { ExpertActivation.Gelu, ExpertActivation.SwiGlu })
            foreach (var rows in new[] { 1, 5, ExpertFfn.WeightsFirstMaxRows, ExpertFfn.WeightsFirstMaxRows + 1, 200 })
                foreach (var masked in new[] { false, true })
                    data.Add(activation, rows, masked);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Forward_and_gradients_equal_the_written_out_formula(ExpertActivation activation, int rows, bool masked)
    {
        using var scope = NewDisposeScope();
        var config = new MoeLayerConfig { DModel = DModel, DFF = DFF, NumExperts = 2, TopK = 1, Activation = activation };
        using var ffn = ExpertFfn.Create(config, seed: 21);
        var p = ffn.named_parameters().ToDictionary(n => n.name, n => n.parameter);
        var generator = new Generator(22);
        var u = randn(rows, DModel, generator: generator);
        var dy = randn(rows, DModel, generator: generator);
        var mask = masked ? rand(rows, DFF, generator: generator).gt(0.3).to(ScalarType.Float32).div(0.7) : null;

        var input = u.detach().requires_grad_(true);
        var y = ffn.Forward(input, mask);
        y.mul(dy).sum().backward();
        var dx = input.grad!.clone();
        var grads = p.ToDictionary(kv => kv.Key, kv => kv.Value.grad!.clone());
        foreach (var parameter in p.Values) parameter.grad!.zero_();

        // The same weights, detached, through the formula with u·Wᵀ products and autograd of its own.
        var w = p.ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone().requires_grad_(true));
        var input2 = u.detach().requires_grad_(true);
        var hidden = activation == ExpertActivation.Gelu
            ? functional.gelu(input2.matmul(w["w1"].t()).add(w["b1"]))
            : functional.silu(input2.matmul(w["w1"].t())).mul(input2.matmul(w["w3"].t()));
        if (mask is not null) hidden = hidden.mul(mask);
        var expected = hidden.matmul(w["w2"].t());
        if (activation == ExpertActivation.Gelu) expected = expected.add(w["b2"]);
        expected.mul(dy).sum().backward();

        Assert.Equal(new long[] { rows, DModel }, y.shape);
        TensorAssert.Close(y, expected, 1e-6, "y");
        TensorAssert.Close(dx, input2.grad, 1e-6, "∂u");
        foreach (var name in p.Keys) TensorAssert.Close(grads[name], w[name].grad, 1e-6, $"∂{name}");
    }
}
