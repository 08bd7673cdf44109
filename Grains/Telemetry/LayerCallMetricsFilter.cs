using System.Diagnostics;

namespace MoeCluster.Grains.Telemetry;

/// <summary>
/// Times the router's forward, backward and step as the router serves them, and counts its
/// recoveries, from outside the router: the grain keeps no metrics code of its own.
/// </summary>
public sealed class LayerCallMetricsFilter : IIncomingGrainCallFilter
{
    public async Task Invoke(IIncomingGrainCallContext context)
    {
        if (context.InterfaceMethod?.DeclaringType != typeof(IMoeRouterGrain))
        {
            await context.Invoke();
            return;
        }
        var started = Stopwatch.GetTimestamp();
        var failed = false;
        try
        {
            await context.Invoke();
        }
        catch
        {
            failed = true;
            throw;
        }
        finally
        {
            Record(context.MethodName, context.TargetId.Key.ToString() ?? "", Stopwatch.GetElapsedTime(started).TotalMilliseconds, failed);
        }
    }

    private static void Record(string method, string layer, double milliseconds, bool failed)
    {
        var tags = new TagList { { "layer", layer } };
        if (failed) tags.Add("error", true);
        switch (method)
        {
            case nameof(IMoeRouterGrain.Forward): MoeMetrics.ForwardDuration.Record(milliseconds, tags); break;
            case nameof(IMoeRouterGrain.Backward): MoeMetrics.BackwardDuration.Record(milliseconds, tags); break;
            case nameof(IMoeRouterGrain.Step): MoeMetrics.StepDuration.Record(milliseconds, tags); break;
            case nameof(IMoeRouterGrain.Recover) when !failed: MoeMetrics.Recoveries.Add(1, tags); break;
        }
    }
}
