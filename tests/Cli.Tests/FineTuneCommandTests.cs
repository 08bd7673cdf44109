using System.Text.Json;
using Xunit;

namespace MoeCluster.Cli.Tests;

/// <summary>The fine-tuning controls, the specialization report and the expert-count sweep, through the CLI.</summary>
public class FineTuneCommandTests
{
    [Fact]
    public async Task Demo_inspect_reports_every_evaluation_token_by_class_and_writes_a_png()
    {
        var dir = Directory.CreateTempSubdirectory("moe-inspect-").FullName;
        try
        {
            var png = Path.Combine(dir, "experts.png");
            var (exit, stdout, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, $"demo --steps 10 --inspect --json --plot {png}", TimeSpan.FromMinutes(3));
            Assert.True(exit == 0, $"exit {exit}; stderr: {stderr}");
            using var summary = JsonDocument.Parse(stdout);
            var report = summary.RootElement.GetProperty("specialization");
            // The report covers the 1,024 labelled evaluation tokens, top-2: each is routed or dropped twice.
            Assert.Equal(1024, report.GetProperty("tokens").GetInt64());
            Assert.Equal(8, report.GetProperty("classes").GetInt32());
            long routed = 0, dropped = 0;
            foreach (var expert in report.GetProperty("experts").EnumerateArray())
            {
                var counts = expert.GetProperty("class_counts").EnumerateArray().Select(c => c.GetInt64()).ToArray();
                Assert.Equal(expert.GetProperty("routed").GetInt64(), counts.Sum());
                routed += expert.GetProperty("routed").GetInt64();
                dropped += expert.GetProperty("dropped").GetInt64();
            }
            Assert.Equal(2 * 1024, routed + dropped);
            var header = File.ReadAllBytes(png).Take(8).ToArray();
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, header);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Fine_tuning_with_the_router_and_every_expert_frozen_leaves_the_layer_bit_identical()
    {
        var dir = Directory.CreateTempSubdirectory("moe-finetune-").FullName;
        try
        {
            var baseFile = Path.Combine(dir, "base.safetensors");
            var tunedFile = Path.Combine(dir, "tuned.safetensors");
            var pretrain = await MoeProcess.RunAsync(MoeProcess.CliDll, $"demo --steps 10 --silos 1 --experts-per-device 8 --json --export {baseFile}", TimeSpan.FromMinutes(3));
            Assert.True(pretrain.ExitCode == 0, pretrain.Stderr);
            Assert.True(File.Exists(Path.Combine(dir, "base.local.safetensors")), "the demo writes its local model beside the layer");
            var tune = await MoeProcess.RunAsync(MoeProcess.CliDll,
                $"demo --steps 5 --silos 1 --experts-per-device 8 --json --init {baseFile} --capacity-factor 2 --expert-dropout 0.4 --freeze-router --freeze-experts all --export {tunedFile}",
                TimeSpan.FromMinutes(3));
            Assert.True(tune.ExitCode == 0, tune.Stderr);
            using var tuned = JsonDocument.Parse(tune.Stdout);
            using var pretrained = JsonDocument.Parse(pretrain.Stdout);
            // Starting from the trained model, the loss starts where pre-training ended, not at a fresh model's 2.3.
            Assert.True(tuned.RootElement.GetProperty("initial_loss").GetDouble() < 0.8 * pretrained.RootElement.GetProperty("initial_loss").GetDouble(),
                $"fine-tuning started at loss {tuned.RootElement.GetProperty("initial_loss").GetDouble()}");

            using var before = MoeCluster.Client.SafeTensorsFile.Read(baseFile);
            using var after = MoeCluster.Client.SafeTensorsFile.Read(tunedFile);
            Assert.Equal(before.Tensors.Keys.Order(), after.Tensors.Keys.Order());
            foreach (var (name, value) in before.Tensors)
                Assert.True(value.Equals(after.Tensors[name]), $"{name} changed although the router and every expert were frozen");
            Assert.NotEqual(before.Metadata["moecluster.version"], after.Metadata["moecluster.version"]);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Sweep_trains_once_per_expert_count_and_plots_the_points()
    {
        var dir = Directory.CreateTempSubdirectory("moe-sweep-").FullName;
        try
        {
            var png = Path.Combine(dir, "sweep.png");
            var (exit, stdout, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, $"sweep --experts 4,2 --steps 20 --json --plot {png}", TimeSpan.FromMinutes(3));
            Assert.True(exit == 0, $"exit {exit}; stderr: {stderr}");
            using var summary = JsonDocument.Parse(stdout);
            var points = summary.RootElement.GetProperty("points").EnumerateArray().ToList();
            Assert.Equal([2, 4], points.Select(p => p.GetProperty("experts").GetInt32()));
            Assert.Equal(2, summary.RootElement.GetProperty("top_k").GetInt32());
            Assert.All(points, p => Assert.True(p.GetProperty("final_loss").GetDouble() < p.GetProperty("initial_loss").GetDouble()));
            Assert.True(new FileInfo(png).Length > 0, "the sweep writes its plot");

            var refused = await MoeProcess.RunAsync(MoeProcess.CliDll, "sweep --experts 1,4 --top-k 2 --steps 5", TimeSpan.FromMinutes(1));
            Assert.Equal(2, refused.ExitCode);
            Assert.Equal("moe: --experts has 1, fewer than --top-k 2; every run needs at least k experts", refused.Stderr.Trim());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
