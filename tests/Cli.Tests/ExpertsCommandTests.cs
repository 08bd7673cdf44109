using MoeCluster.Client.Tests;
using Xunit;

namespace MoeCluster.Cli.Tests;

/// <summary><c>./moe experts add|split|remove</c> against a running silo process.</summary>
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
    }
}
