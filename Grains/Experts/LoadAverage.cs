namespace MoeCluster.Grains.Experts;

/// <summary>
/// An expert's load per step as exponential moving averages: what it computed since the last step
/// (rows, compute time) is folded in at each step with weight <see cref="Weight"/>; the first step
/// seeds the averages. Step-based rather than time-based so that the same run measures the same
/// token loads on a busy and on an idle machine.
/// </summary>
public sealed class LoadAverage
{
    public const double Weight = 0.25;

    private long tokens;
    private TimeSpan compute;
    private bool seeded;

    public double TokensPerStep { get; private set; }
    public double ComputeMillisecondsPerStep { get; private set; }

    public void Add(long rows, TimeSpan elapsed)
    {
        tokens += rows;
        compute += elapsed;
    }

    public void EndStep()
    {
        var (t, ms) = ((double)tokens, compute.TotalMilliseconds);
        (tokens, compute) = (0, TimeSpan.Zero);
        if (!seeded)
        {
            (TokensPerStep, ComputeMillisecondsPerStep, seeded) = (t, ms, true);
            return;
        }
        TokensPerStep += Weight * (t - TokensPerStep);
        ComputeMillisecondsPerStep += Weight * (ms - ComputeMillisecondsPerStep);
    }
}
