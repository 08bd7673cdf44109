using Orleans.Core.Internal;
using MoeCluster.Client;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Cluster.Tests;

/// <summary>Read-only replicas of a hot expert serve inference: the same outputs, the load spread, never stale weights.</summary>
[Collection(SharedClusterCollection.Name)]
public class ExpertReplicaTests(SharedClusterFixture fixture, ITestOutputHelper output)
{
    private static readonly LayerSpec Spec = new()
    {
        DModel = 16, DFF = 32, NumExperts = 4, TopK = 2, CapacityFactor = 0, Seed = 91,
        Optimizer = new OptimizerSpec { LearningRate = 1e-2 },
    };

    private static async Task TrainStepAsync(RemoteMoeLayer layer, Generator generator)
    {
        using var x = randn(64, Spec.DModel, generator: generator);
        using var forward = await layer.ForwardAsync(x);
        using var dx = await layer.BackwardAsync(forward.BatchId, x);
        await layer.StepAsync();
    }

    private static async Task<Tensor> InferAsync(RemoteMoeLayer layer, Tensor x)
    {
        using var forward = await layer.ForwardAsync(x, train: false);
        return forward.Y.clone();
    }

    private static void AssertBitIdentical(Tensor expected, Tensor actual, string what)
    {
        using var equal = expected.eq(actual).all();
        Assert.True(equal.item<bool>(), $"{what}: the replicated layer's output differs from the unreplicated one's");
    }

    [Fact]
    public async Task Replicas_give_the_unreplicated_outputs_share_the_load_and_follow_every_step()
    {
        var layer = await fixture.Client.CreateLayerAsync("replicas", Spec);
        using var generator = new Generator(92);
        await TrainStepAsync(layer, generator);
        using var x = randn(300, Spec.DModel, generator: generator);
        using var plain = await InferAsync(layer, x);
        var hot = (await layer.GetStatsAsync()).Experts.MaxBy(e => e.TokensRouted)!.Expert;

        var made = await layer.ReplicateExpertAsync(hot.Index, 2);
        Assert.Equal(2, made.Length);
        Assert.All(made, r => Assert.Equal(1, r.Version));
        Assert.Contains(made, r => r.Placement.Silo != hot.Placement.Silo); // a replica away from the expert
        var before = await layer.GetStatsAsync();
        using (var replicated = await InferAsync(layer, x)) AssertBitIdentical(plain, replicated, "version 1");

        var after = await layer.GetStatsAsync();
        var rows = after.Experts.Single(e => e.Expert.Index == hot.Index).TokensRouted - before.Experts.Single(e => e.Expert.Index == hot.Index).TokensRouted;
        var onExpert = after.Experts.Single(e => e.Expert.Index == hot.Index).Expert.TokensProcessed - hot.TokensProcessed;
        var onReplicas = after.Replicas.Select(r => r.TokensProcessed).ToArray();
        output.WriteLine($"expert {hot.Index}: {rows} rows of the inference forward → {onExpert} on the expert, {string.Join(" and ", onReplicas)} on its replicas " +
            $"({string.Join(", ", after.Replicas.Select(r => r.Placement.Silo))})");
        Assert.Equal(rows, onExpert + onReplicas.Sum());
        Assert.All(onReplicas.Append(onExpert), n => Assert.InRange(n, rows / 3, rows / 3 + 1)); // an even three-way split

        // Training uses the expert alone; the step loads the replicas with the new weights.
        await TrainStepAsync(layer, generator);
        var trained = await layer.GetStatsAsync();
        Assert.Equal(onReplicas, trained.Replicas.Select(r => r.TokensProcessed));
        Assert.All(trained.Replicas, r => Assert.Equal(2, r.Version));
        using var withReplicas = await InferAsync(layer, x);
        Assert.Equal(2, await layer.RemoveReplicasAsync(hot.Index));
        Assert.Empty((await layer.GetStatsAsync()).Replicas);
        using var without = await InferAsync(layer, x);
        AssertBitIdentical(without, withReplicas, "version 2");
        using (var changed = without.sub(plain).abs().max()) Assert.True(changed.item<float>() > 0, "the step changed the outputs");
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task A_replica_is_refused_mid_step_and_for_an_unknown_expert()
    {
        var layer = await fixture.Client.CreateLayerAsync("replicas-refused", Spec);
        using var x = ones(8, Spec.DModel);
        using var forward = await layer.ForwardAsync(x);
        var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => layer.ReplicateExpertAsync(0, 1));
        Assert.StartsWith("replicating expert 0 on layer \"replicas-refused\" happens at a step boundary, but step 1 has begun", refused.Message);
        using var dx = await layer.BackwardAsync(forward.BatchId, x);
        await layer.StepAsync();
        var unknown = await Assert.ThrowsAsync<ArgumentException>(() => layer.ReplicateExpertAsync(9, 1));
        Assert.StartsWith("expert 9 cannot be replicated: layer \"replicas-refused\" has experts", unknown.Message);
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task A_repeated_replication_request_adds_no_more_replicas()
    {
        var layer = await fixture.Client.CreateLayerAsync("replicas-repeated", Spec);
        using var generator = new Generator(93);
        await TrainStepAsync(layer, generator);
        // The SDK sends one request id with every try of a call; a retry after a lost answer
        // reaches the router as the same call again.
        var router = fixture.Client.Orleans.GetGrain<IMoeRouterGrain>("replicas-repeated");
        var request = Guid.NewGuid();
        var first = await router.ReplicateExpert(1, 2, request);
        var repeated = await router.ReplicateExpert(1, 2, request);
        Assert.Equal(2, first.Length);
        Assert.Equal(first.Select(r => r.Replica).Order(), repeated.Select(r => r.Replica).Order());
        Assert.Equal(2, (await layer.GetStatsAsync()).Replicas.Length);
        // A new request adds its replicas.
        Assert.Equal(3, (await router.ReplicateExpert(1, 1, Guid.NewGuid())).Length);
        Assert.Equal(3, await layer.RemoveReplicasAsync(1));
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task A_router_that_comes_back_from_its_checkpoint_makes_its_replicas_again_at_its_next_step()
    {
        const string name = "replicas-restored";
        var layer = await fixture.Client.CreateLayerAsync(name, Spec);
        using var generator = new Generator(94);
        await TrainStepAsync(layer, generator);
        Assert.Equal(2, (await layer.ReplicateExpertAsync(2, 2)).Length);
        await TrainStepAsync(layer, generator); // its checkpoint records the two replicas
        await layer.FlushAsync();

        var router = fixture.Client.Orleans.GetGrain<IMoeRouterGrain>(name);
        await router.Cast<IGrainManagementExtension>().DeactivateOnIdle();
        var back = await router.GetStats(); // a new activation, from the checkpoint of version 2
        Assert.Equal(2, back.Version);
        Assert.Empty(back.Replicas); // none are used before a step has loaded them

        await TrainStepAsync(layer, generator);
        var stepped = await layer.GetStatsAsync();
        Assert.Equal(2, stepped.Replicas.Count(r => r.Expert == 2));
        Assert.All(stepped.Replicas, r => Assert.Equal(3, r.Version));
        // They serve inference again, and the layer's output is the one without them.
        using var x = randn(300, Spec.DModel, generator: generator);
        using var withReplicas = await InferAsync(layer, x);
        var served = (await layer.GetStatsAsync()).Replicas.Sum(r => r.TokensProcessed);
        Assert.True(served > 0, "no replica served the inference forward");
        Assert.Equal(2, await layer.RemoveReplicasAsync(2));
        using var without = await InferAsync(layer, x);
        AssertBitIdentical(without, withReplicas, "version 3");
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task A_router_that_comes_back_reloads_the_replicas_that_outlived_it_and_leaks_no_slot()
    {
        const string name = "replicas-in-place";
        var leasedBefore = await LeasedAsync();
        var layer = await fixture.Client.CreateLayerAsync(name, Spec);
        using var generator = new Generator(95);
        await TrainStepAsync(layer, generator);
        // Expert 1's replica first, then expert 2's two; expert 1's are gone by the checkpoint,
        // so a count of 2 for expert 2 must find its two copies, not make new ones beside them.
        Assert.Single(await layer.ReplicateExpertAsync(1, 1));
        var first = await layer.ReplicateExpertAsync(2, 2);
        Assert.Equal(1, await layer.RemoveReplicasAsync(1));
        await TrainStepAsync(layer, generator); // its checkpoint records expert 2's two replicas
        await layer.FlushAsync();
        var leased = await LeasedAsync();
        Assert.Equal(leasedBefore + Spec.NumExperts + 2, leased);

        var router = fixture.Client.Orleans.GetGrain<IMoeRouterGrain>(name);
        await router.Cast<IGrainManagementExtension>().DeactivateOnIdle();
        Assert.Equal(2, (await router.GetStats()).Version); // a new activation, from its checkpoint
        await TrainStepAsync(layer, generator);

        var restored = (await layer.GetStatsAsync()).Replicas.Where(r => r.Expert == 2).ToList();
        Assert.Equal(2, restored.Count);
        Assert.All(restored, r => Assert.Equal(3, r.Version));
        // The same copies, where they were: no slot more than before the router went.
        Assert.Equal(first.Select(r => (r.Replica, r.Placement)).Order(), restored.Select(r => (r.Replica, r.Placement)).Order());
        Assert.Equal(leased, await LeasedAsync());

        await layer.DeleteAsync();
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (await LeasedAsync() != leasedBefore && DateTime.UtcNow < deadline) await Task.Delay(50);
        Assert.Equal(leasedBefore, await LeasedAsync());
    }

    [Fact]
    public async Task A_replica_that_lost_its_weights_is_stood_in_for_by_its_expert_until_the_next_step()
    {
        const string name = "replicas-lost";
        var layer = await fixture.Client.CreateLayerAsync(name, Spec);
        using var generator = new Generator(96);
        await TrainStepAsync(layer, generator);
        using var x = randn(300, Spec.DModel, generator: generator);
        using var plain = await InferAsync(layer, x);
        var hot = (await layer.GetStatsAsync()).Experts.MaxBy(e => e.TokensRouted)!.Expert.Index;
        Assert.Equal(2, (await layer.ReplicateExpertAsync(hot, 2)).Length);

        // Replica 0 goes away, as when its silo is lost: a new activation of it holds no weights.
        var lost = fixture.Client.Orleans.GetGrain<IExpertReplicaGrain>(hot, $"{name}#0");
        await lost.Cast<IGrainManagementExtension>().DeactivateOnIdle();
        using (var served = await InferAsync(layer, x)) AssertBitIdentical(plain, served, "with a replica lost");
        var after = (await layer.GetStatsAsync()).Replicas.OrderBy(r => r.Replica).ToList();
        Assert.Equal(-1, after[0].Version); // empty, and left out
        Assert.Equal(0, after[0].TokensProcessed);
        Assert.True(after[1].TokensProcessed > 0, "the other replica served no rows");
        var untouched = after[1].TokensProcessed;
        using (var again = await InferAsync(layer, x)) AssertBitIdentical(plain, again, "with the lost replica left out");
        Assert.True((await layer.GetStatsAsync()).Replicas.Single(r => r.Replica == 1).TokensProcessed > untouched, "the live replica was left out too");

        // The next step loads it again, and both serve.
        await TrainStepAsync(layer, generator);
        var stepped = (await layer.GetStatsAsync()).Replicas;
        Assert.All(stepped, r => Assert.Equal(2, r.Version));
        using var withReplicas = await InferAsync(layer, x);
        Assert.All((await layer.GetStatsAsync()).Replicas, r => Assert.True(r.TokensProcessed > stepped.Single(s => s.Replica == r.Replica).TokensProcessed, $"replica {r.Replica} served no rows"));
        Assert.Equal(2, await layer.RemoveReplicasAsync(hot));
        using var without = await InferAsync(layer, x);
        AssertBitIdentical(without, withReplicas, "version 2");
        await layer.DeleteAsync();
    }

    private async Task<int> LeasedAsync() => (await fixture.Client.GetSlotUsageAsync()).Sum(u => u.Leased);
}
