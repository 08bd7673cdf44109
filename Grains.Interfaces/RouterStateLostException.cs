namespace MoeCluster;

/// <summary>
/// The router that would apply a step is not the activation the client trained the step with:
/// its silo was lost and it came back from its checkpoint without the step's gate gradients and
/// pending micro-batches. Applying the step would silently lose them, so it is refused; the SDK
/// recovers the layer and replays the step.
/// </summary>
[GenerateSerializer]
public sealed class RouterStateLostException : Exception
{
    public RouterStateLostException(string message) : base(message) { }
}
