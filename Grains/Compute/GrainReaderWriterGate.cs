namespace MoeCluster.Grains.Compute;

/// <summary>
/// Lets many calls of a reentrant grain read its weights at once while a step, which writes
/// them, waits for the readers to leave and holds new ones back. Only for use on one grain's
/// scheduler, whose turns never run in parallel, so it needs no locks.
/// </summary>
public sealed class GrainReaderWriterGate
{
    private int readers;
    private TaskCompletionSource? writerDone;
    private TaskCompletionSource? readersDrained;

    public async Task<IDisposable> ReadAsync()
    {
        while (writerDone is not null) await writerDone.Task;
        readers++;
        return new Release(() =>
        {
            if (--readers == 0) readersDrained?.TrySetResult();
        });
    }

    public async Task<IDisposable> WriteAsync()
    {
        while (writerDone is not null) await writerDone.Task;
        var done = writerDone = new TaskCompletionSource();
        if (readers > 0)
        {
            readersDrained = new TaskCompletionSource();
            await readersDrained.Task;
            readersDrained = null;
        }
        return new Release(() =>
        {
            writerDone = null;
            done.SetResult();
        });
    }

    private sealed class Release(Action release) : IDisposable
    {
        private Action? action = release;
        public void Dispose() => Interlocked.Exchange(ref action, null)?.Invoke();
    }
}
