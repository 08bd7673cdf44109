using static TorchSharp.torch;

namespace MoeCluster.Client;

/// <summary>
/// What <see cref="SafeTensorsFile.Read(string)"/> returns: CPU tensors that own their memory, by
/// name, and the file's <c>__metadata__</c> (empty when the file has none). Dispose disposes the
/// tensors still in <see cref="Tensors"/>; remove one from it to keep it past that.
/// </summary>
public sealed class SafeTensorsContent : IDisposable
{
    internal SafeTensorsContent(Dictionary<string, Tensor> tensors, Dictionary<string, string> metadata)
    {
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>The tensors, in the order of their bytes in the file.</summary>
    public Dictionary<string, Tensor> Tensors { get; }

    public Dictionary<string, string> Metadata { get; }

    public void Dispose()
    {
        foreach (var t in Tensors.Values) t.Dispose();
        Tensors.Clear();
    }
}
