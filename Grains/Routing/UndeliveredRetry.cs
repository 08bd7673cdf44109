namespace MoeCluster.Grains.Routing;

/// <summary>
/// Repeats a call that Orleans could not even send: the target's silo just left (a graceful
/// stop hands its experts off) but this silo's directory cache still points there. Nothing was
/// delivered, so repeating is safe, and once the cache learns the silo is gone the call reaches
/// the grain's new activation. Calls that may have been delivered are never repeated here.
/// </summary>
public static class UndeliveredRetry
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    public static async Task<T> Call<T>(Func<Task<T>> call)
    {
        var started = DateTime.UtcNow;
        for (var delay = TimeSpan.FromMilliseconds(50); ; delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(1).Ticks)))
        {
            try
            {
                return await call();
            }
            catch (OrleansMessageRejectionException e) when (NotSent(e) && DateTime.UtcNow - started < Deadline)
            {
                await Task.Delay(delay);
            }
        }
    }

    public static Task Call(Func<Task> call) => Call(async () => { await call(); return true; });

    // Orleans' wording when the connection to the target silo could not be made.
    private static bool NotSent(OrleansMessageRejectionException e) =>
        e.Message.StartsWith("Exception while sending message", StringComparison.Ordinal);
}
