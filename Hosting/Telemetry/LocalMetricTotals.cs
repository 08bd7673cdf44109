using System.Diagnostics.Metrics;
using MoeCluster.Grains.Telemetry;

namespace MoeCluster.Hosting.Telemetry;

/// <summary>
/// Running totals of this process's recovery and migration counters, for the status page: a
/// listener on the meter <c>MoeCluster</c> that keeps two numbers and needs no exporter.
/// </summary>
public sealed class LocalMetricTotals : IDisposable
{
    private readonly MeterListener listener = new();
    private long recoveries, migrations;

    public LocalMetricTotals()
    {
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == MoeMetrics.MeterName && instrument.Name is "moe.layer.recoveries" or "moe.expert.migrations")
                l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
        {
            if (instrument.Name == "moe.layer.recoveries") Interlocked.Add(ref recoveries, value);
            else Interlocked.Add(ref migrations, value);
        });
        listener.Start();
    }

    public long Recoveries => Interlocked.Read(ref recoveries);
    public long Migrations => Interlocked.Read(ref migrations);

    public void Dispose() => listener.Dispose();
}
