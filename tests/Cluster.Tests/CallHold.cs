using System.Collections.Concurrent;

namespace MoeCluster.Cluster.Tests;

/// <summary>
/// Fault injection for the in-process cluster (its silos share this process): holds the calls of
/// one grain method on one layer's grains until released, and tells when such a call has begun.
/// It puts a race that timing alone makes rare (a slow checkpoint write, a late call) in a fixed order.
/// </summary>
public sealed class CallHold : IIncomingGrainCallFilter
{
    private static readonly ConcurrentDictionary<(string Method, string Layer), TaskCompletionSource> held = new();
    private static readonly ConcurrentDictionary<(string Method, string Layer), TaskCompletionSource> awaited = new();

    /// <summary>Calls of <paramref name="method"/> on <paramref name="layer"/>'s grains wait until the result is disposed.</summary>
    public static IDisposable Hold(string method, string layer)
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!held.TryAdd((method, layer), gate)) throw new InvalidOperationException($"{method} on layer \"{layer}\" is already held");
        return new Release(() => { held.TryRemove((method, layer), out _); gate.TrySetResult(); });
    }

    /// <summary>Completes when the next call of <paramref name="method"/> on <paramref name="layer"/>'s grains begins.</summary>
    public static Task Begun(string method, string layer) =>
        awaited.GetOrAdd((method, layer), _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;

    public async Task Invoke(IIncomingGrainCallContext context)
    {
        // A router's key is its layer; an expert's is "<id>+<layer>".
        var key = context.TargetId.Key.ToString() ?? "";
        var layer = key[(key.IndexOf('+') + 1)..];
        if (awaited.TryRemove((context.MethodName, layer), out var begun)) begun.TrySetResult();
        if (held.TryGetValue((context.MethodName, layer), out var gate)) await gate.Task;
        await context.Invoke();
    }

    private sealed class Release(Action release) : IDisposable
    {
        private Action? action = release;
        public void Dispose() => Interlocked.Exchange(ref action, null)?.Invoke();
    }
}
