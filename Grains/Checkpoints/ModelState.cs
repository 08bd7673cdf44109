using MoeCluster.Grains.Numerics;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MoeCluster.Grains.Checkpoints;

/// <summary>Copies parameters and optimizer state to checkpoint records and back, bit for bit.</summary>
public static class ModelState
{
    public static TensorRecord[] Capture(IEnumerable<(string Name, Parameter Parameter)> parameters) =>
        parameters.Select(p =>
        {
            var payload = TensorWire.ToPayload(p.Parameter);
            return new TensorRecord { Name = p.Name, DType = payload.DType, Shape = payload.Shape, Data = payload.Data };
        }).ToArray();

    public static TensorRecord Capture(string name, Tensor t)
    {
        var payload = TensorWire.ToPayload(t);
        return new TensorRecord { Name = name, DType = payload.DType, Shape = payload.Shape, Data = payload.Data };
    }

    public static Tensor ToTensor(TensorRecord r) => TensorWire.FromPayload(new TensorPayload(r.Shape, r.DType, r.Data));

    /// <summary>The accumulated gradients, for the parameters that have one.</summary>
    public static TensorRecord[] CaptureGradients(IEnumerable<(string Name, Parameter Parameter)> parameters)
    {
        var records = new List<TensorRecord>();
        foreach (var (name, p) in parameters)
        {
            using var grad = p.grad;
            if (grad is not null) records.Add(Capture(name, grad));
        }
        return records.ToArray();
    }

    /// <summary>Sets each parameter's gradient to its record (none for a parameter without one).</summary>
    public static void RestoreGradients(IEnumerable<(string Name, Parameter Parameter)> parameters, IReadOnlyList<TensorRecord> records)
    {
        var byName = records.ToDictionary(r => r.Name);
        foreach (var (name, p) in parameters)
        {
            if (!byName.TryGetValue(name, out var r)) continue;
            using var value = ToTensor(r);
            using var placed = value.to(p.dtype, p.device);
            p.grad = placed; // the parameter keeps its own reference to the storage
        }
    }

    /// <summary>Overwrites each parameter with its record; names, shapes and dtypes must match exactly.</summary>
    public static void Restore(IEnumerable<(string Name, Parameter Parameter)> parameters, IReadOnlyList<TensorRecord> records, string owner)
    {
        var byName = records.ToDictionary(r => r.Name);
        var targets = parameters.ToList();
        if (byName.Count != targets.Count || targets.Any(t => !byName.ContainsKey(t.Name)))
            throw new CheckpointCorruptException(
                $"checkpoint of {owner} has tensors [{string.Join(", ", byName.Keys.Order())}]; expected [{string.Join(", ", targets.Select(t => t.Name).Order())}]");
        using var noGrad = no_grad();
        foreach (var (name, parameter) in targets)
        {
            var r = byName[name];
            using var value = TensorWire.FromPayload(new TensorPayload(r.Shape, r.DType, r.Data));
            if (!value.shape.SequenceEqual(parameter.shape) || value.dtype != parameter.dtype)
                throw new CheckpointCorruptException(
                    $"checkpoint of {owner} has {name} as [{string.Join(", ", value.shape)}] {value.dtype}; expected [{string.Join(", ", parameter.shape)}] {parameter.dtype}");
            parameter.copy_(value);
        }
    }

    /// <summary>The optimizer's state as TorchSharp streams it, in one array of exactly its length (no growing stream to trim).</summary>
    public static byte[] CaptureOptimizer(optim.Optimizer optimizer) => ExactSizeBuffers.WriteStream(stream => SaveOptimizer(optimizer, stream));

    /// <summary>Writes the optimizer's state to <paramref name="stream"/> as TorchSharp streams it.</summary>
    public static void SaveOptimizer(optim.Optimizer optimizer, Stream stream)
    {
        using var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        Stateful(optimizer).save_state_dict(writer);
    }

    public static void RestoreOptimizer(optim.Optimizer optimizer, byte[] state, string owner)
    {
        try
        {
            using var reader = new BinaryReader(new MemoryStream(state));
            Stateful(optimizer).load_state_dict(reader);
        }
        catch (Exception e) when (e is InvalidDataException or ArgumentException or EndOfStreamException)
        {
            throw new CheckpointCorruptException($"checkpoint of {owner} has an optimizer state that does not fit: {e.Message}");
        }
    }

    // AdamW and SGD both derive from OptimizerHelper, which is where TorchSharp keeps state streaming.
    private static OptimizerHelper Stateful(optim.Optimizer optimizer) => optimizer as OptimizerHelper
        ?? throw new NotSupportedException($"optimizer {optimizer.GetType().Name} cannot stream its state");

    /// <summary>Sets every gradient to zero (the step's accumulation starts over).</summary>
    public static void ZeroGradients(IEnumerable<Parameter> parameters)
    {
        using var noGrad = no_grad();
        foreach (var p in parameters)
        {
            using var grad = p.grad;
            grad?.zero_();
        }
    }
}
