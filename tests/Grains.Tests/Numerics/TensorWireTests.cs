using MoeCluster.Grains.Numerics;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Tests.Numerics;

public class TensorWireTests
{
    [Fact]
    public void Float32_round_trips_bit_for_bit()
    {
        using var generator = new Generator(3);
        using var x = randn([5, 7], generator: generator);
        var payload = TensorWire.ToPayload(x);
        Assert.Equal(TensorDType.F32, payload.DType);
        Assert.Equal(new long[] { 5, 7 }, payload.Shape);
        Assert.Equal(5 * 7 * 4, payload.Data.Length);
        using var back = TensorWire.FromPayload(payload);
        Assert.Equal(ScalarType.Float32, back.dtype);
        Assert.True(back.Equals(x));
    }

    [Theory]
    [InlineData(TensorDType.BF16, ScalarType.BFloat16)]
    [InlineData(TensorDType.F16, ScalarType.Float16)]
    public void Half_wires_carry_exactly_what_torch_rounds_to(TensorDType wire, ScalarType type)
    {
        using var generator = new Generator(4);
        using var x = randn([4, 9], generator: generator);
        var payload = TensorWire.ToPayload(x, wire);
        Assert.Equal(4 * 9 * 2, payload.Data.Length);
        using var back = TensorWire.FromPayload(payload);
        using var rounded = x.to(type);
        Assert.Equal(type, back.dtype);
        Assert.True(back.Equals(rounded));
    }

    [Fact]
    public void Non_contiguous_tensors_are_sent_in_row_major_order()
    {
        using var x = arange(12, ScalarType.Float32).view(3, 4);
        using var transposed = x.t();
        using var back = TensorWire.FromPayload(TensorWire.ToPayload(transposed));
        Assert.Equal(new long[] { 4, 3 }, back.shape);
        Assert.True(back.Equals(transposed));
    }

    [Fact]
    public void Decoded_tensor_owns_its_memory()
    {
        using var x = ones(2, 2);
        var payload = TensorWire.ToPayload(x);
        using var back = TensorWire.FromPayload(payload);
        Array.Clear(payload.Data);
        Assert.Equal(4f, back.sum().item<float>());
    }

    [Fact]
    public void Empty_tensor_round_trips()
    {
        using var x = zeros(0, 16);
        var payload = TensorWire.ToPayload(x, TensorDType.BF16);
        Assert.Empty(payload.Data);
        using var back = TensorWire.FromPayload(payload);
        Assert.Equal(new long[] { 0, 16 }, back.shape);
    }

    [Fact]
    public void Wrong_byte_count_and_bad_dtypes_are_refused()
    {
        var shortPayload = new TensorPayload([2, 3], TensorDType.F32, new byte[20]);
        Assert.Equal("payload of shape [2, 3] F32 has 20 bytes; expected 24 (Parameter 'payload')",
            Assert.Throws<ArgumentException>(() => TensorWire.FromPayload(shortPayload)).Message);
        var negative = new TensorPayload([-1, 3], TensorDType.F32, []);
        Assert.Equal("payload shape [-1, 3] has a negative size; expected sizes ≥ 0 (Parameter 'payload')",
            Assert.Throws<ArgumentException>(() => TensorWire.FromPayload(negative)).Message);
        using var ints = zeros([2], ScalarType.Int64);
        Assert.Equal("dtype Int64 cannot cross the wire; expected Float32, BFloat16 or Float16 (Parameter 'type')",
            Assert.Throws<ArgumentException>(() => TensorWire.ToPayload(ints)).Message);
    }
}
