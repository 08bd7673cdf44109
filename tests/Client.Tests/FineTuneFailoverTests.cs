using Xunit;
using Xunit.Abstractions;

namespace MoeCluster.Client.Tests;

/// <summary>
/// Expert dropout and training controls through a real failover: the router's silo is killed
/// during step 4, after new controls were set for that step; the SDK's replay draws the same
/// dropout masks and sets the controls again, so the run ends bit-identical to one without the kill.
/// </summary>
public class FineTuneFailoverTests(ITestOutputHelper output)
{
    private static readonly LayerSpec Spec = FailoverTests.Spec with { ExpertDropout = 0.3 };

    // From step 4 on: expert 1 frozen, expert 2 at twice the rate, the router at its own rate.
    private static Func<int, Task> Controls(RemoteMoeLayer layer) => step => step == FailoverTests.KillStep
        ? layer.SetTrainingControlsAsync(new TrainingControls
        {
            FrozenExperts = [1],
            RouterLearningRate = 5e-4,
            ExpertLearningRateMultipliers = new Dictionary<int, double> { [2] = 2.0 },
        })
        : Task.CompletedTask;

    [Fact]
    public async Task Dropout_and_controls_set_mid_run_replay_exactly_after_the_router_silo_is_killed()
    {
        Dictionary<string, TorchSharp.torch.Tensor> expected;
        await using (var cluster = await FailoverTests.StartCluster())
        await using (var client = await cluster.Connect())
        {
            var layer = await client.CreateLayerAsync(FailoverTests.LayerName, Spec);
            await FailoverTests.Train(layer, 1, FailoverTests.ShortRun, beforeStep: Controls(layer));
            expected = await layer.GetWeightsAsync();
        }

        await using (var cluster = await FailoverTests.StartCluster())
        await using (var client = await cluster.Connect())
        {
            var layer = await client.CreateLayerAsync(FailoverTests.LayerName, Spec);
            var victim = await FailoverTests.PickSilo(layer, cluster, routerSilo: true);
            await FailoverTests.Train(layer, 1, FailoverTests.ShortRun, (FailoverTests.Phase.Backward, victim), beforeStep: Controls(layer));
            output.WriteLine($"{layer.Recoveries} recovery, {layer.LastReplayedMicroBatches} micro-batches replayed");
            Assert.Equal(1, layer.Recoveries);
            FailoverTests.AssertBitIdentical(await layer.GetWeightsAsync(), expected);
        }
        foreach (var w in expected.Values) w.Dispose();
    }
}
