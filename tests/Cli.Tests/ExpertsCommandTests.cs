using MoeCluster.Client.Tests;
using Xunit;

namespace MoeCluster.Cli.Tests;

/// <summary><c>./moe experts add|split|remove|replicate|unreplicate</c> against a running silo process.</summary>
public class ExpertsCommandTests
{
    [Fact]
    public async Task Experts_are_added_split_and_removed_by_the_cli_and_bad_ids_are_refused()
    {
        await using var cluster = await ProcessCluster.StartAsync(silos: 1, "--devices cpu --experts-per-device 12 --threads 1");
        await using var client = await cluster.Connect();
        var layer = await client.CreateLayerAsync("elastic", new LayerSpec { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, Seed = 1 });
        var connect = $"--cluster {cluster.Address} --cluster-id {cluster.ClusterId} --layer elastic";

        var add = await MoeProcess.RunAsync(MoeProcess.CliDll, $"experts add {connect} --count 2", TimeSpan.FromMinutes(1));
        Assert.True(add.ExitCode == 0, add.Stderr);
        Assert.Equal("added expert(s) 4, 5 to layer \"elastic\" at version 0; its 6 experts are now 0, 1, 2, 3, 4, 5", add.Stdout.Trim());
        var split = await MoeProcess.RunAsync(MoeProcess.CliDll, $"experts split {connect} --expert 1", TimeSpan.FromMinutes(1));
        Assert.True(split.ExitCode == 0, split.Stderr);
        Assert.Equal("added expert(s) 6 to layer \"elastic\" at version 0; its 7 experts are now 0, 1, 2, 3, 4, 5, 6", split.Stdout.Trim());
        var remove = await MoeProcess.RunAsync(MoeProcess.CliDll, $"experts remove {connect} --ids 0,4", TimeSpan.FromMinutes(1));
        Assert.True(remove.ExitCode == 0, remove.Stderr);
        Assert.Equal("removed expert(s) 0, 4 from layer \"elastic\" at version 0; its 5 experts are now 1, 2, 3, 5, 6", remove.Stdout.Trim());
        var set = await layer.GetExpertSetAsync();
        Assert.Equal(new[] { 1, 2, 3, 5, 6 }, set.ExpertIds);

        var json = await MoeProcess.RunAsync(MoeProcess.CliDll, $"experts add {connect} --json", TimeSpan.FromMinutes(1));
        Assert.True(json.ExitCode == 0, json.Stderr);
        var change = System.Text.Json.JsonDocument.Parse(json.Stdout).RootElement;
        Assert.Equal([7], change.GetProperty("added").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal([1, 2, 3, 5, 6, 7], change.GetProperty("expert_ids").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal(6, change.GetProperty("spec").GetProperty("num_experts").GetInt32());

        var unknown = await MoeProcess.RunAsync(MoeProcess.CliDll, $"experts remove {connect} --ids 9", TimeSpan.FromMinutes(1));
        Assert.Equal(2, unknown.ExitCode);
        Assert.Equal("moe: expert(s) 9 cannot be removed: layer \"elastic\" has experts 1, 2, 3, 5, 6, 7", unknown.Stderr.Trim());

        var replicate = await MoeProcess.RunAsync(MoeProcess.CliDll, $"experts replicate {connect} --expert 2 --count 2 --json", TimeSpan.FromMinutes(1));
        Assert.True(replicate.ExitCode == 0, replicate.Stderr);
        using (var replicas = System.Text.Json.JsonDocument.Parse(replicate.Stdout))
        {
            Assert.Equal(2, replicas.RootElement.GetArrayLength());
            Assert.All(replicas.RootElement.EnumerateArray(), r =>
            {
                Assert.Equal(2, r.GetProperty("expert").GetInt32());
                Assert.Equal(0, r.GetProperty("version").GetInt64());
            });
        }
        Assert.Equal(2, (await layer.GetStatsAsync()).Replicas.Length);
        var unreplicate = await MoeProcess.RunAsync(MoeProcess.CliDll, $"experts unreplicate {connect} --expert 2", TimeSpan.FromMinutes(1));
        Assert.True(unreplicate.ExitCode == 0, unreplicate.Stderr);
        Assert.Equal("removed the replicas of expert 2 of layer \"elastic\"", unreplicate.Stdout.Trim());
        Assert.Empty((await layer.GetStatsAsync()).Replicas);

        // One silo: nothing to move, but the plan names its measure, window and device loads.
        var rebalance = await MoeProcess.RunAsync(MoeProcess.CliDll, $"rebalance {connect} --dry-run --by ComputeTime --json", TimeSpan.FromMinutes(1));
        Assert.True(rebalance.ExitCode == 0, rebalance.Stderr);
        using var plan = System.Text.Json.JsonDocument.Parse(rebalance.Stdout);
        Assert.Equal("compute_time", plan.RootElement.GetProperty("plan").GetProperty("measure").GetString());
        Assert.Equal("since the layer's start", plan.RootElement.GetProperty("plan").GetProperty("window").GetString());
        Assert.Equal(0, plan.RootElement.GetProperty("plan").GetProperty("moves").GetArrayLength());
        Assert.Single(plan.RootElement.GetProperty("plan").GetProperty("device_load_before").EnumerateObject());
    }
}
