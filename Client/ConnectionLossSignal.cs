namespace MoeCluster.Client;

/// <summary>
/// Fires when the client loses a gateway connection: calls in flight through it would otherwise
/// wait out their whole response timeout, since the Orleans client cannot know their target died.
/// Each signal cancels the current token and starts a new one.
/// </summary>
public sealed class ConnectionLossSignal
{
    private CancellationTokenSource current = new();

    public CancellationToken Token => Volatile.Read(ref current).Token;

    public void Signal()
    {
        var old = Interlocked.Exchange(ref current, new CancellationTokenSource());
        old.Cancel();
        old.Dispose();
    }
}
