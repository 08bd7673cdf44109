using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Xunit;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>The meter <c>MoeCluster</c> as an in-process listener sees it while a layer trains.</summary>
[Collection(SharedClusterCollection.Name)]
public class MetricsTests(SharedClusterFixture fixture)
{
    [Fact]
    public async Task A_training_step_moves_the_routing_latency_checkpoint_and_recovery_instruments()
    {
        const string name = "metered";
        var spec = new LayerSpec { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, CapacityFactor = 1.0, MinCapacity = 1, Seed = 3 };
        // Sums per instrument of what carried this layer's tag (other tests' layers train at the same time),
        // and of the checkpoint instruments, which are tagged by kind only.
        var sums = new ConcurrentDictionary<string, double>();
        var counts = new ConcurrentDictionary<string, int>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "MoeCluster") l.EnableMeasurementEvents(instrument);
        };
        void Measured(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var mine = instrument.Name.StartsWith("moe.checkpoint.", StringComparison.Ordinal);
            foreach (var tag in tags) mine |= tag is { Key: "layer", Value: name };
            if (!mine) return;
            sums.AddOrUpdate(instrument.Name, value, (_, s) => s + value);
            counts.AddOrUpdate(instrument.Name, 1, (_, c) => c + 1);
        }
        listener.SetMeasurementEventCallback<long>((i, v, t, _) => Measured(i, v, t));
        listener.SetMeasurementEventCallback<double>((i, v, t, _) => Measured(i, v, t));
        listener.Start();

        var layer = await fixture.Client.CreateLayerAsync(name, spec);
        using var generator = new Generator(4);
        using var x = randn(32, spec.DModel, generator: generator);
        using var dy = randn(32, spec.DModel, generator: generator);
        using var forward = await layer.ForwardAsync(x);
        using var dx = await layer.BackwardAsync(forward.BatchId, dy);
        await layer.StepAsync();
        await layer.FlushAsync();
        await fixture.Client.Orleans.GetGrain<IMoeRouterGrain>(name).Recover();

        // 32 tokens × top-2 over 4 experts with capacity ceil(1.0·32·2/4) = 16 each: what was not admitted was dropped.
        var routed = forward.Routing.Routed.Sum();
        var dropped = forward.Routing.TotalDropped;
        Assert.Equal(64, routed + dropped);
        Assert.Equal(routed, sums.GetValueOrDefault("moe.tokens.routed"));
        Assert.Equal(dropped, sums.GetValueOrDefault("moe.tokens.dropped"));
        Assert.Equal(1, counts.GetValueOrDefault("moe.layer.forward.duration"));
        Assert.Equal(1, counts.GetValueOrDefault("moe.layer.backward.duration"));
        Assert.Equal(1, counts.GetValueOrDefault("moe.layer.step.duration"));
        Assert.True(sums.GetValueOrDefault("moe.layer.step.duration") > 0, "the step took no time");
        // Version 1 of the router and of 4 experts, at least (version 0 was written when the layer was created).
        Assert.True(counts.GetValueOrDefault("moe.checkpoint.write.duration") >= 5,
            $"{counts.GetValueOrDefault("moe.checkpoint.write.duration")} checkpoint writes seen; expected at least 5");
        Assert.True(sums.GetValueOrDefault("moe.checkpoint.write.bytes") > 4 * 2 * spec.DModel * spec.DFF * sizeof(float),
            "fewer checkpoint bytes than the experts' weights hold");
        Assert.Equal(1, sums.GetValueOrDefault("moe.layer.recoveries"));
        await layer.DeleteAsync();
    }
}
