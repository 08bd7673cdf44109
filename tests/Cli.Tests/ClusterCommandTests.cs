using System.Text.Json;
using MoeCluster.Client.Tests;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using MoeCluster.Hosting;

namespace MoeCluster.Cli.Tests;

/// <summary><c>status</c>, <c>layers</c>, <c>checkpoint</c> and <c>bench</c> against a running silo process: exit codes and their <c>--json</c>.</summary>
[Collection(RunningClusterCollection.Name)]
public class ClusterCommandTests(RunningCluster running)
{
    private static JsonElement Json(string stdout) => JsonDocument.Parse(stdout).RootElement;

    private static void Ok((int ExitCode, string Stdout, string Stderr) run, string what) =>
        Assert.True(run.ExitCode == 0, $"{what}: exit {run.ExitCode}; stderr: {run.Stderr}");

    [Fact]
    public async Task Layers_are_created_listed_described_and_deleted_and_refusals_exit_2()
    {
        var c = running.Connect;
        var created = await running.Moe($"layers create cli-a --d-model 8 --d-ff 16 --experts 4 --top-k 1 --seed 3 --json {c}");
        Ok(created, "create");
        var layer = Json(created.Stdout);
        Assert.Equal("cli-a", layer.GetProperty("name").GetString());
        Assert.Equal(0, layer.GetProperty("version").GetInt64());
        Assert.Equal(4, layer.GetProperty("experts").GetArrayLength());
        Assert.All(layer.GetProperty("experts").EnumerateArray(), e => Assert.Equal("cpu", e.GetProperty("device").GetString()));

        var list = await running.Moe($"layers list --json {c}");
        Ok(list, "list");
        var listed = Json(list.Stdout).GetProperty("layers").EnumerateArray().Single(l => l.GetProperty("name").GetString() == "cli-a");
        Assert.Equal(4, listed.GetProperty("num_experts").GetInt32());
        Assert.Equal(1, listed.GetProperty("top_k").GetInt32());

        var describe = await running.Moe($"layers describe cli-a --json {c}");
        Ok(describe, "describe");
        var spec = Json(describe.Stdout).GetProperty("spec");
        Assert.Equal(8, spec.GetProperty("d_model").GetInt32());
        Assert.Equal(16, spec.GetProperty("dff").GetInt32());
        Assert.Equal(3, spec.GetProperty("seed").GetInt64());
        Assert.Equal("gelu", spec.GetProperty("activation").GetString());

        var tables = await running.Moe($"layers describe cli-a {c}");
        Ok(tables, "describe as tables");
        Assert.Contains("NumExperts", tables.Stdout);

        var clash = await running.Moe($"layers create cli-a --d-model 8 --d-ff 32 --experts 4 {c}");
        Assert.Equal(2, clash.ExitCode);
        Assert.Contains("layer \"cli-a\" already exists with a different spec", clash.Stderr);
        var tooBig = await running.Moe($"layers create cli-big --d-model 8 --d-ff 16 --experts 100 {c}");
        Assert.Equal(2, tooBig.ExitCode);
        var usage = await running.Moe($"layers create cli-b --d-model 8 {c}");
        Assert.Equal(1, usage.ExitCode);

        Ok(await running.Moe($"layers delete cli-a {c}"), "delete");
        var after = await running.Moe($"layers list --json {c}");
        Ok(after, "list after delete");
        Assert.DoesNotContain(Json(after.Stdout).GetProperty("layers").EnumerateArray(), l => l.GetProperty("name").GetString() == "cli-a");
        var gone = await running.Moe($"layers describe cli-a {c}");
        Assert.Equal(2, gone.ExitCode);
        Assert.Equal("moe: layer \"cli-a\" does not exist; create it first", gone.Stderr.Trim());
        Assert.Equal(2, (await running.Moe($"layers delete cli-a {c}")).ExitCode);
    }

    [Fact]
    public async Task Status_and_checkpoint_list_report_a_layer_that_trained()
    {
        var layer = await running.Client.CreateLayerAsync("cli-trained", new LayerSpec { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, Seed = 5 });
        using (var generator = new Generator(6))
            for (int step = 0; step < 2; step++)
            {
                using var x = randn(24, 8, generator: generator);
                using var forward = await layer.ForwardAsync(x);
                using var dx = await layer.BackwardAsync(forward.BatchId, x);
                await layer.StepAsync();
            }
        await layer.FlushAsync();
        var stats = await layer.GetStatsAsync();
        var c = running.Connect;

        var status = await running.Moe($"status --json {c}");
        Ok(status, "status");
        var root = Json(status.Stdout);
        var silo = Assert.Single(root.GetProperty("silos").EnumerateArray());
        Assert.Equal(16, silo.GetProperty("devices")[0].GetProperty("slots").GetInt32());
        var trained = root.GetProperty("layers").EnumerateArray().Single(l => l.GetProperty("name").GetString() == "cli-trained");
        Assert.Equal(2, trained.GetProperty("version").GetInt64());
        Assert.Equal(stats.TokensRouted, trained.GetProperty("tokens_routed").GetInt64());
        Assert.True(stats.TokensRouted > 0);
        Assert.True(silo.GetProperty("tokens_routed").GetInt64() >= stats.TokensRouted);

        var tables = await running.Moe($"status {c}");
        Ok(tables, "status as tables");
        Assert.Contains("cli-trained", tables.Stdout);

        var watch = await running.Moe($"status --watch --json --count 2 --interval 0.2 {c}");
        Ok(watch, "status --watch");
        var lines = watch.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.All(lines, line => Assert.True(Json(line).GetProperty("layers").GetArrayLength() >= 1));

        var live = await running.Moe($"status --watch --count 2 --interval 0.2 {c}");
        Ok(live, "status --watch as tables");
        Assert.Contains("cli-trained", live.Stdout);
        Assert.Contains("refreshed", live.Stdout);

        var checkpoints = await running.Moe($"checkpoint list cli-trained --json {c}");
        Ok(checkpoints, "checkpoint list");
        var entries = Json(checkpoints.Stdout).GetProperty("checkpoints").EnumerateArray().ToArray();
        Assert.Equal(5, entries.Length); // the router and 4 experts
        Assert.Equal("layers/cli-trained/router", entries[0].GetProperty("key").GetString());
        // The store keeps the two newest versions of each key.
        Assert.All(entries, e => Assert.Equal(new long[] { 1, 2 }, e.GetProperty("versions").EnumerateArray().Select(v => v.GetInt64())));

        var file = Path.Combine(running.Cluster.Store, "cli-trained.safetensors");
        var export = await running.Moe($"checkpoint export --layer cli-trained --out {file} {c}");
        Ok(export, "checkpoint export");
        Assert.Equal($"exported layer \"cli-trained\" at version 2 to {file}", export.Stdout.Trim());

        // `checkpoint import` into a second layer of the same spec: its next step carries the weights.
        var copy = await running.Client.CreateLayerAsync("cli-copy", new LayerSpec { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, Seed = 99 });
        var import = await running.Moe($"checkpoint import --layer cli-copy --in {file} {c}");
        Ok(import, "checkpoint import");
        Assert.Equal("imported 17 tensors into layer \"cli-copy\"; it is now at version 1", import.Stdout.Trim());
        var copied = Json((await running.Moe($"layers describe cli-copy --json {c}")).Stdout);
        Assert.Equal(1, copied.GetProperty("version").GetInt64());
        var (expected, actual) = (await layer.GetWeightsAsync(), await copy.GetWeightsAsync());
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, value) in expected) Assert.True(actual[name].Equals(value), $"{name} was not imported exactly");
        var notThere = await running.Moe($"checkpoint import --layer cli-copy --in {file}.missing {c}");
        Assert.Equal(2, notThere.ExitCode);
        Assert.Equal($"moe: --in {file}.missing does not exist; expected a safetensors file written by export", notThere.Stderr.Trim());
        await copy.DeleteAsync();
        Assert.Equal(2, (await running.Moe($"checkpoint list no-such-layer {c}")).ExitCode);
    }

    [Fact]
    public async Task A_cluster_that_cannot_be_reached_exits_3()
    {
        var port = LoopbackPorts.Free(1)[0];
        var run = await running.Moe($"status --cluster localhost --gateway-port {port} --connect-timeout 3");
        Assert.Equal(3, run.ExitCode);
        Assert.Contains($"moe: the cluster could not be reached: no gateway of cluster \"moecluster\" at localhost, gateway port(s) {port} answered within 3 s", run.Stderr);
    }

    [Fact]
    public async Task Bench_and_silo_hand_their_arguments_to_their_executables()
    {
        // An option the benchmark does not know: its own parser refuses it, which shows it got there.
        var run = await running.Moe("bench --no-such-option");
        Assert.Equal(1, run.ExitCode);
        Assert.Contains("--no-such-option", run.Stderr + run.Stdout);
        Assert.Contains("moe-bench", (await running.Moe("bench --help")).Stdout);
        var silo = await running.Moe("silo --port not-a-port");
        Assert.Equal(1, silo.ExitCode);
        Assert.Contains("not-a-port", silo.Stderr + silo.Stdout);
    }
}
