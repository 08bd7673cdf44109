using MoeCluster.Client;
using MoeCluster.Client.Tests;
using TorchSharp;
using Xunit;

namespace MoeCluster.Cli.Tests;

/// <summary>The demo against running silo processes, and export/import through the CLI.</summary>
public class ExportCommandTests
{
    [Fact]
    public async Task Demo_against_a_real_cluster_exports_the_same_file_on_every_run_with_the_same_seed()
    {
        await using var cluster = await ProcessCluster.StartAsync(silos: 2, "--devices cpu --experts-per-device 8 --threads 1");
        await (await cluster.Connect()).DisposeAsync(); // waits until both silos know each other's slots
        var files = new List<string>();
        try
        {
            for (int run = 0; run < 2; run++)
            {
                var file = Path.Combine(cluster.Store, $"demo-{run}.safetensors");
                files.Add(file);
                var (exit, stdout, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll,
                    $"demo --cluster {cluster.Address} --cluster-id {cluster.ClusterId} --steps 15 --seed 5 --json --no-plots --export {file}", TimeSpan.FromMinutes(3));
                Assert.True(exit == 0, $"run {run}: exit {exit}; stderr: {stderr}");
                Assert.Contains("\"final_loss\"", stdout);
            }
            Assert.Equal(File.ReadAllBytes(files[0]), File.ReadAllBytes(files[1]));
            using var content = SafeTensorsFile.Read(files[0]);
            Assert.Equal(new long[] { 32, 8 }, content.Tensors["gate"].shape);
            Assert.Equal(new long[] { 64, 32 }, content.Tensors["experts.7.w1"].shape);
            Assert.Equal(1 + 8 * 4, content.Tensors.Count);
            Assert.Equal("15", content.Metadata["moecluster.version"]);
            // The demo deletes its layer when it ends (no --keep).
            await using var client = await cluster.Connect();
            await Assert.ThrowsAsync<InvalidOperationException>(() => client.GetLayerAsync("demo"));
        }
        finally
        {
            foreach (var f in files) File.Delete(f);
        }
    }

    [Fact]
    public async Task Export_then_import_round_trips_a_layer_and_bad_files_are_refused()
    {
        await using var cluster = await ProcessCluster.StartAsync(silos: 1, "--devices cpu --experts-per-device 12 --threads 1");
        await using var client = await cluster.Connect();
        var spec = new LayerSpec { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, Seed = 1 };
        var source = await client.CreateLayerAsync("source", spec);
        var target = await client.CreateLayerAsync("target", spec with { Seed = 2 });
        var connect = $"--cluster {cluster.Address} --cluster-id {cluster.ClusterId}";
        var file = Path.Combine(cluster.Store, "source.safetensors");

        var export = await MoeProcess.RunAsync(MoeProcess.CliDll, $"export {connect} --layer source --out {file}", TimeSpan.FromMinutes(1));
        Assert.True(export.ExitCode == 0, export.Stderr);
        Assert.Equal($"exported layer \"source\" at version 0 to {file}", export.Stdout.Trim());
        var import = await MoeProcess.RunAsync(MoeProcess.CliDll, $"import {connect} --layer target --in {file}", TimeSpan.FromMinutes(1));
        Assert.True(import.ExitCode == 0, import.Stderr);
        Assert.Equal("imported 17 tensors into layer \"target\"; it is now at version 1", import.Stdout.Trim());

        var expected = await source.GetWeightsAsync();
        var actual = await target.GetWeightsAsync();
        foreach (var (name, value) in expected) Assert.True(actual[name].Equals(value), $"{name} was not imported exactly");

        // A file of another shape is refused, and the layer keeps its weights and version.
        var other = await client.CreateLayerAsync("other", spec with { DFF = 12 });
        var refused = await MoeProcess.RunAsync(MoeProcess.CliDll, $"import {connect} --layer other --in {file}", TimeSpan.FromMinutes(1));
        Assert.Equal(2, refused.ExitCode);
        Assert.StartsWith("moe: imported tensor \"experts.0.b1\" has shape [16]; expected [12]", refused.Stderr.Trim());
        Assert.Equal(0, await other.GetVersionAsync());
        var missing = await MoeProcess.RunAsync(MoeProcess.CliDll, $"export {connect} --layer nowhere --out {file}", TimeSpan.FromMinutes(1));
        Assert.Equal(2, missing.ExitCode);
        Assert.Equal("moe: layer \"nowhere\" does not exist; create it first", missing.Stderr.Trim());
    }
}
