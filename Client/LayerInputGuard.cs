using TorchSharp;
using static TorchSharp.torch;

namespace MoeCluster.Client;

/// <summary>
/// The SDK's checks of a tensor before it leaves the client: its dtype, its size against the
/// cluster's message limit, and (when <see cref="MoeClientOptions.ValidateInputs"/> is on, the
/// default) that every value is finite. A refused call sends nothing, so the cluster is unchanged.
/// </summary>
internal sealed class LayerInputGuard(bool validateValues, long maxMessageBytes)
{
    /// <summary>Room left in a message for everything besides the tensor (ids, shape, labels' headers).</summary>
    public const long Headroom = 1 << 20;

    /// <summary>Orleans' own default (MessagingOptions.MaxMessageBodySize), used when the client's options cannot be read.</summary>
    public const long OrleansDefaultMaxMessageBytes = 100 * 1024 * 1024;

    public bool ValidateValues { get; } = validateValues;
    public long MaxMessageBytes { get; } = maxMessageBytes;

    /// <summary>Checks <paramref name="t"/> (x of a forward, or dy of a backward) of layer <paramref name="layer"/>.</summary>
    public void Check(Tensor t, string name, string layer, LayerSpec spec) =>
        Check(t, name, layer, spec, t.shape.Length > 0 ? t.shape[0] : 1);

    /// <summary>
    /// The same checks for a tensor sent in parts (micro-batches) of at most
    /// <paramref name="largestPartRows"/> rows each: the message limit applies to one part.
    /// </summary>
    public void Check(Tensor t, string name, string layer, LayerSpec spec, long largestPartRows)
    {
        if (t.dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"{name} has dtype {t.dtype}; layer \"{layer}\" expects Float32, BFloat16 or Float16", name);
        // The largest message of the call: the tensor itself, y back in its dtype, or the rows one
        // expert gets (at most all of them) in the layer's wire dtype.
        var elementBytes = Math.Max(t.element_size(), TensorPayload.ElementSize(spec.WireDType));
        var rowElements = t.shape.Length > 1 ? t.NumberOfElements / Math.Max(1, t.shape[0]) : 1;
        var inParts = t.shape.Length > 0 && largestPartRows < t.shape[0];
        var bytes = (inParts ? largestPartRows * rowElements : t.NumberOfElements) * elementBytes;
        if (bytes > MaxMessageBytes - Headroom)
        {
            var rows = Math.Max(1, (MaxMessageBytes - Headroom) / Math.Max(1, rowElements * elementBytes));
            var parts = inParts ? $" in micro-batches of up to {largestPartRows} rows" : "";
            throw new ArgumentException(
                $"{name} of shape [{string.Join(", ", t.shape)}]{parts} needs messages of {bytes} bytes; one call to the cluster carries at most " +
                $"{MaxMessageBytes - Headroom} (Orleans' MaxMessageBodySize {MaxMessageBytes} less 1 MiB); split it into micro-batches of at most {rows} tokens", name);
        }
        if (ValidateValues) CheckFinite(t, name);
    }

    /// <summary>Counts NaN and infinite values and names the first row that holds one.</summary>
    public static void CheckFinite(Tensor t, string name)
    {
        using var scope = NewDisposeScope();
        // Fast path, one reduction and no mask: a NaN or an infinity makes the sum NaN or infinite,
        // so a finite sum proves every value finite. A sum that overflows from finite values falls
        // through to the exact count below, which then finds nothing and returns.
        if (float.IsFinite(t.detach().sum(ScalarType.Float32).item<float>())) return;
        var finite = isfinite(t.detach());
        if (finite.all().item<bool>()) return;
        var nan = isnan(t.detach()).sum().item<long>();
        var total = finite.numel() - finite.sum().item<long>();
        var firstRow = t.dim() >= 2
            ? logical_not(finite).any(1).nonzero()[0, 0].item<long>()
            : logical_not(finite).nonzero()[0, 0].item<long>();
        throw new ArgumentException(
            $"{name} holds {nan} NaN and {total - nan} infinite value(s), the first in row {firstRow}; expected finite numbers " +
            "(checked because MoeClientOptions.ValidateInputs is on)", name);
    }
}
