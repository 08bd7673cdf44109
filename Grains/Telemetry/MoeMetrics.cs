using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace MoeCluster.Grains.Telemetry;

/// <summary>
/// The silo's instruments, on the meter <c>MoeCluster</c>: what OpenTelemetry exports (OTLP,
/// Prometheus) and what a <see cref="MeterListener"/> sees. Static, as <see cref="Meter"/>s are
/// meant to be: one per process, shared by every grain; listeners pick it by name.
/// </summary>
public static class MoeMetrics
{
    public const string MeterName = "MoeCluster";

    public static readonly Meter Meter = new(MeterName, typeof(MoeMetrics).Assembly.GetName().Version?.ToString());

    /// <summary>Token assignments admitted to an expert (after capacity); tags <c>layer</c>, <c>expert</c>.</summary>
    public static readonly Counter<long> TokensRouted = Meter.CreateCounter<long>(
        "moe.tokens.routed", "{token}", "Token assignments a router sent to an expert (admitted within capacity)");

    /// <summary>Token assignments beyond an expert's capacity; tags <c>layer</c>, <c>expert</c>.</summary>
    public static readonly Counter<long> TokensDropped = Meter.CreateCounter<long>(
        "moe.tokens.dropped", "{token}", "Token assignments dropped because the expert's capacity was full");

    public static readonly Histogram<double> ForwardDuration = Meter.CreateHistogram<double>(
        "moe.layer.forward.duration", "ms", "Time a router took to answer a forward (routing, experts, combine)");

    public static readonly Histogram<double> BackwardDuration = Meter.CreateHistogram<double>(
        "moe.layer.backward.duration", "ms", "Time a router took to answer a backward");

    public static readonly Histogram<double> StepDuration = Meter.CreateHistogram<double>(
        "moe.layer.step.duration", "ms", "Time a router took to apply an optimizer step to the gate and every expert");

    public static readonly Counter<long> CheckpointWriteBytes = Meter.CreateCounter<long>(
        "moe.checkpoint.write.bytes", "By", "Bytes of checkpoint records written to the store");

    public static readonly Histogram<double> CheckpointWriteDuration = Meter.CreateHistogram<double>(
        "moe.checkpoint.write.duration", "ms", "Time to write one checkpoint record until it is durable");

    public static readonly Counter<long> CheckpointReadBytes = Meter.CreateCounter<long>(
        "moe.checkpoint.read.bytes", "By", "Bytes of checkpoint records read back (activations, recoveries)");

    public static readonly Histogram<double> CheckpointReadDuration = Meter.CreateHistogram<double>(
        "moe.checkpoint.read.duration", "ms", "Time to read one checkpoint record");

    /// <summary>A layer brought back to its newest durable version after a failure; tag <c>layer</c>.</summary>
    public static readonly Counter<long> Recoveries = Meter.CreateCounter<long>(
        "moe.layer.recoveries", "{recovery}", "Layers brought back to their newest durable version after a failure");

    /// <summary>An expert taken over on another silo from the handoff of a silo that stopped; tags <c>layer</c>, <c>expert</c>.</summary>
    public static readonly Counter<long> Migrations = Meter.CreateCounter<long>(
        "moe.expert.migrations", "{migration}", "Experts that moved to this silo with their whole state");

    /// <summary>One forward's routing counts, per expert; experts with nothing to count are skipped.</summary>
    public static void RecordRouting(string layer, long[] routed, long[] dropped)
    {
        if (!TokensRouted.Enabled && !TokensDropped.Enabled) return;
        for (int e = 0; e < routed.Length; e++)
        {
            var tags = new TagList { { "layer", layer }, { "expert", e } };
            if (routed[e] > 0) TokensRouted.Add(routed[e], tags);
            if (dropped[e] > 0) TokensDropped.Add(dropped[e], tags);
        }
    }

    public static void RecordMigration(string layer, int expert) =>
        Migrations.Add(1, new TagList { { "layer", layer }, { "expert", expert } });

    /// <summary>The kind of record a checkpoint key names (<c>router</c>, <c>experts</c>, <c>handoffs</c>, …), a tag of low cardinality.</summary>
    public static string CheckpointKind(string key)
    {
        var parts = key.Split('/');
        return parts.Length >= 3 && parts[0] == "layers" ? parts[2] : parts[0];
    }
}
