using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Numerics;

/// <summary>
/// Tensors to and from <see cref="TensorPayload"/> with one memory copy each way: the bytes of a
/// contiguous CPU tensor are copied out in one block, and copied into a fresh tensor in one block.
/// A dtype change (Float32 to a BFloat16 wire) or a device move happens before that copy.
/// Internal, and compiled into the client SDK as well (Client.csproj links this file), so the
/// grains and the SDK convert identically without the interfaces assembly depending on TorchSharp.
/// </summary>
internal static class TensorWire
{
    public static ScalarType ToScalarType(TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => ScalarType.Float32,
        TensorDType.BF16 => ScalarType.BFloat16,
        TensorDType.F16 => ScalarType.Float16,
        _ => throw new ArgumentException($"unknown wire dtype {(int)dtype}; expected F32, BF16 or F16", nameof(dtype)),
    };

    public static TensorDType ToTensorDType(ScalarType type) => type switch
    {
        ScalarType.Float32 => TensorDType.F32,
        ScalarType.BFloat16 => TensorDType.BF16,
        ScalarType.Float16 => TensorDType.F16,
        _ => throw new ArgumentException($"dtype {type} cannot cross the wire; expected Float32, BFloat16 or Float16", nameof(type)),
    };

    /// <summary>Encodes <paramref name="t"/> in its own dtype.</summary>
    public static TensorPayload ToPayload(Tensor t) => ToPayload(t, ToTensorDType(t.dtype));

    /// <summary>Encodes <paramref name="t"/> as <paramref name="wire"/>, converting the element type if needed.</summary>
    public static TensorPayload ToPayload(Tensor t, TensorDType wire)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (t.dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"dtype {t.dtype} cannot cross the wire; expected Float32, BFloat16 or Float16", nameof(t));
        var type = ToScalarType(wire);
        var bytes = t.NumberOfElements * TensorPayload.ElementSize(wire);
        if (bytes > Array.MaxLength)
            throw new ArgumentException($"tensor of shape [{string.Join(", ", t.shape)}] needs {bytes} bytes; one payload holds at most {Array.MaxLength}; split it", nameof(t));
        using var scope = NewDisposeScope();
        // to() and contiguous() return aliases when nothing needs converting, so a contiguous CPU
        // tensor already in the wire dtype is copied exactly once, into the payload's array.
        var source = t.detach().to(type, CPU).contiguous();
        // Not zeroed first, as Span.ToArray's array is: the copy writes every byte, and zeroing
        // 16 MiB took as long again as copying it (6.0 against 3.4 ms on the idle machine).
        var data = source.NumberOfElements == 0 ? [] : GC.AllocateUninitializedArray<byte>(checked((int)bytes));
        if (data.Length > 0) source.bytes.CopyTo(data);
        return new TensorPayload(t.shape, wire, data);
    }

    /// <summary>
    /// <paramref name="length"/> bytes of <paramref name="t"/>'s row-major data in its own dtype, from
    /// byte <paramref name="offset"/>: one part of a weight that travels in parts.
    /// </summary>
    public static byte[] ReadBytes(Tensor t, long offset, int length, string name)
    {
        CheckRange(t, offset, length, name);
        using var scope = NewDisposeScope();
        var source = t.detach().to(CPU).contiguous();
        var data = GC.AllocateUninitializedArray<byte>(length);
        if (length > 0) source.bytes.Slice(checked((int)offset), length).CopyTo(data);
        return data;
    }

    /// <summary>Copies <paramref name="data"/> into a contiguous CPU tensor's bytes from byte <paramref name="offset"/>.</summary>
    public static void WriteBytes(Tensor t, long offset, ReadOnlySpan<byte> data, string name)
    {
        CheckRange(t, offset, data.Length, name);
        if (t.device_type != DeviceType.CPU || !t.is_contiguous())
            throw new ArgumentException($"{name} must be a contiguous CPU tensor to be written in parts", nameof(t));
        if (data.Length > 0) data.CopyTo(t.bytes.Slice(checked((int)offset), data.Length));
    }

    private static void CheckRange(Tensor t, long offset, int length, string name)
    {
        var total = t.NumberOfElements * t.element_size();
        if (offset < 0 || length < 0 || offset > total - length)
            throw new ArgumentException($"bytes {offset}..{offset + length} of {name} are out of range; it has {total} bytes");
    }

    /// <summary>Decodes a payload into a new tensor of the payload's dtype on <paramref name="device"/>.</summary>
    public static Tensor FromPayload(TensorPayload payload, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(payload);
        if (payload.Shape.Any(s => s < 0))
            throw new ArgumentException($"payload shape [{string.Join(", ", payload.Shape)}] has a negative size; expected sizes ≥ 0", nameof(payload));
        var expected = payload.ElementCount * TensorPayload.ElementSize(payload.DType);
        if (payload.Data.LongLength != expected)
            throw new ArgumentException($"payload of shape [{string.Join(", ", payload.Shape)}] {payload.DType} has {payload.Data.LongLength} bytes; expected {expected}", nameof(payload));
        var t = empty(payload.Shape, ToScalarType(payload.DType), CPU);
        if (expected > 0) payload.Data.AsSpan().CopyTo(t.bytes);
        if (device is null || device.type == DeviceType.CPU) return t;
        using (t) return t.to(device);
    }
}
