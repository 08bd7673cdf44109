using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace MoeCluster.Client.Telemetry;

/// <summary>
/// The SDK's instruments, on the same meter name as the silos' (<c>MoeCluster</c>), so that one
/// listener or exporter that names the meter sees both sides.
/// </summary>
public static class ClientMetrics
{
    public const string MeterName = "MoeCluster";

    public static readonly Meter Meter = new(MeterName, typeof(ClientMetrics).Assembly.GetName().Version?.ToString());

    public static readonly Counter<long> Recoveries = Meter.CreateCounter<long>(
        "moe.client.recoveries", "{recovery}", "Failures a layer recovered from by returning to its durable version and replaying");

    public static readonly Counter<long> ReplayedMicroBatches = Meter.CreateCounter<long>(
        "moe.client.replayed_micro_batches", "{micro-batch}", "Micro-batches the SDK sent again after a recovery");

    public static readonly Counter<long> Repeats = Meter.CreateCounter<long>(
        "moe.client.repeats", "{call}", "Calls sent again because they failed on their way while the layer kept its state");

    public static void RecordRecovery(string layer, int replayed)
    {
        var tags = new TagList { { "layer", layer } };
        Recoveries.Add(1, tags);
        ReplayedMicroBatches.Add(replayed, tags);
    }

    public static void RecordRepeat(string layer) => Repeats.Add(1, new TagList { { "layer", layer } });
}
