using System.Diagnostics;
using System.Text.Json;
using MoeCluster.Client;
using MoeCluster.Client.Tests;
using Xunit;
using Xunit.Abstractions;

namespace MoeCluster.Cli.Tests;

/// <summary>
/// <c>./moe lm</c>: the byte-level Switch Transformer trained on the fortunes text, run as a user
/// runs it (the CLI as a child process). The model is the default's shape scaled down (2 blocks,
/// d_model 32, context 32) and libtorch runs one thread, so that runs repeat bit for bit.
/// </summary>
public class LmCommandTests(ITestOutputHelper output)
{
    public const string Tiny = "--layers 2 --d-model 32 --heads 2 --d-ff 64 --context 32 --batch 4 --eval-windows 8 --eval-every 10 --checkpoint-every 10 --threads 1";

    private static string Train(string run, int steps, string more = "") =>
        $"lm train {Tiny} --experts 4 --steps {steps} --run {run} --json {more}";

    private static async Task<JsonElement> RunJson(string arguments, TimeSpan? timeout = null)
    {
        var (exit, stdout, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, arguments, timeout ?? TimeSpan.FromMinutes(4));
        Assert.True(exit == 0, $"moe {arguments}: exit {exit}; stderr: {stderr}");
        return JsonDocument.Parse(stdout).RootElement.Clone();
    }

    private static double[] Validation(JsonElement summary) =>
        summary.GetProperty("validation").EnumerateArray().Select(p => p.GetProperty("loss").GetDouble()).ToArray();

    [Fact]
    public async Task Training_lowers_the_validation_loss_and_the_export_evaluates_the_same_without_a_cluster()
    {
        var run = Directory.CreateTempSubdirectory("moe-lm-").FullName;
        try
        {
            var summary = await RunJson(Train(run, 40));
            var losses = Validation(summary);
            output.WriteLine($"validation losses: {string.Join(", ", losses.Select(l => l.ToString("F4")))}");
            Assert.Equal(4, losses.Length); // steps 10, 20, 30, 40
            Assert.True(losses[^1] < losses[0] - 0.3, $"validation loss fell only from {losses[0]} to {losses[^1]}");
            Assert.True(losses[^1] < Math.Log(256) - 1, $"validation loss {losses[^1]} is not clearly below a uniform guess's ln 256");
            Assert.Equal(40, summary.GetProperty("steps").GetInt64());
            foreach (var png in new[] { summary.GetProperty("plot").GetString()! })
                Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(png)[..4]);

            // The export holds the whole model under PyTorch-style names, the cluster layers' weights included;
            // computed in this process, it gives the validation loss the cluster gave, to float rounding.
            var model = Path.Combine(run, "model.safetensors");
            Assert.Equal(model, summary.GetProperty("model").GetString());
            var eval = await RunJson($"lm eval --model {model} --eval-windows 8 --batch 4 --json");
            Assert.Equal(losses[^1], eval.GetProperty("validation_loss").GetDouble(), 5);
            var names = SafeTensorsNames(model);
            Assert.Contains("tok.weight", names);
            Assert.Contains("blocks.1.attn.qkv.weight", names);
            Assert.Contains("blocks.0.ffn.moe.gate", names);
            Assert.Contains("blocks.1.ffn.moe.experts.3.w2", names);
            Assert.Contains("head.weight", names);

            var (exit, stdout, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, $"lm generate --model {model} --prompt \"Q: Why\" --bytes 30 --temperature 0", TimeSpan.FromMinutes(1));
            Assert.True(exit == 0, stderr);
            Assert.StartsWith("Q: Why", stdout);
            var (_, again, _) = await MoeProcess.RunAsync(MoeProcess.CliDll, $"lm generate --model {model} --prompt \"Q: Why\" --bytes 30 --temperature 0", TimeSpan.FromMinutes(1));
            Assert.Equal(stdout, again); // greedy sampling repeats
        }
        finally
        {
            Directory.Delete(run, recursive: true);
        }
    }

    private static string[] SafeTensorsNames(string path) =>
        SafeTensorsHeader(path).EnumerateObject().Select(p => p.Name).Where(n => n != "__metadata__").ToArray();

    [Fact]
    public async Task A_trainer_killed_with_SIGKILL_then_resumed_ends_bit_identical_to_an_uninterrupted_run()
    {
        var root = Directory.CreateTempSubdirectory("moe-lm-kill-").FullName;
        try
        {
            var straight = Path.Combine(root, "straight");
            var reference = await RunJson(Train(straight, 60));

            // Killed as soon as its record of step 20 is seen, so between two of its checkpoints,
            // with its embedded cluster; the resumed run starts a new cluster on the run's store.
            // (A kill 300 ms later came after the last of 40 steps once the embedded silos got
            // faster: the 40 steps after the record leave room whatever the machine's speed.)
            var killed = Path.Combine(root, "killed");
            var record = Path.Combine(killed, "checkpoint.safetensors");
            using (var trainer = Start(Train(killed, 60)))
            {
                await WaitForCheckpoint(trainer, killed, 20);
                trainer.Kill();
                await trainer.WaitForExitAsync();
            }
            Assert.False(File.Exists(Path.Combine(killed, "model.safetensors")), "the kill came after the run ended");
            var stepAtKill = CheckpointStep(record);
            output.WriteLine($"killed with the checkpoint of step {stepAtKill} on disk");
            Assert.InRange(stepAtKill, 20, 50);

            var resumed = await RunJson(Train(killed, 60, "--resume"));
            Assert.Equal(Validation(reference), Validation(resumed));
            Assert.Equal(File.ReadAllBytes(Path.Combine(straight, "model.safetensors")), File.ReadAllBytes(Path.Combine(killed, "model.safetensors")));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task Against_running_silos_a_killed_trainer_resumes_by_taking_its_layers_back_to_its_checkpoint()
    {
        await using var cluster = await ProcessCluster.StartAsync(silos: 2, "--devices cpu --experts-per-device 8 --threads 1");
        var connect = $"--cluster {cluster.Address} --cluster-id {cluster.ClusterId}";
        var root = Directory.CreateTempSubdirectory("moe-lm-silos-").FullName;
        await using var client = await cluster.Connect();
        try
        {
            var reference = await ReferenceRun(client, connect, Path.Combine(root, "straight"), 30);

            // The layers outlive the trainer here, and go on past its last checkpoint: the
            // resumed run has to take them back to it.
            var killed = Path.Combine(root, "killed");
            using (var trainer = Start(Train(killed, 30, connect)))
            {
                await WaitForCheckpoint(trainer, killed, 10);
                await Task.Delay(150);
                trainer.Kill();
                await trainer.WaitForExitAsync();
            }
            var stepAtKill = CheckpointStep(Path.Combine(killed, "checkpoint.safetensors"));
            var layersAtKill = await (await client.GetLayerAsync("lm-ffn-1")).GetVersionAsync();
            output.WriteLine($"killed at layer version {layersAtKill}, with the checkpoint of step {stepAtKill}");
            Assert.True(stepAtKill < layersAtKill, $"the checkpoint (step {stepAtKill}) was not behind the layers (version {layersAtKill})");

            var (exit, stdout, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, Train(killed, 30, $"{connect} --resume"), TimeSpan.FromMinutes(4));
            Assert.True(exit == 0, $"exit {exit}; stderr: {stderr}");
            Assert.Contains($"→ {stepAtKill}, the run's checkpoint", stderr);
            Assert.Equal(Validation(reference), Validation(JsonDocument.Parse(stdout).RootElement));
            Assert.Equal(File.ReadAllBytes(Path.Combine(root, "straight", "model.safetensors")), File.ReadAllBytes(Path.Combine(killed, "model.safetensors")));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task A_silo_killed_during_training_costs_the_run_nothing()
    {
        await using var cluster = await ProcessCluster.StartAsync(silos: 3, "--devices cpu --experts-per-device 8 --threads 1");
        var connect = $"--cluster {cluster.Address} --cluster-id {cluster.ClusterId}";
        var root = Directory.CreateTempSubdirectory("moe-lm-failover-").FullName;
        await using var client = await cluster.Connect();
        try
        {
            var reference = await ReferenceRun(client, connect, Path.Combine(root, "straight"), 60);

            var run = Path.Combine(root, "failover");
            var trainer = Start(Train(run, 60, connect));
            var stdout = trainer.StandardOutput.ReadToEndAsync();
            var stderr = trainer.StandardError.ReadToEndAsync();
            await WaitForCheckpoint(trainer, run, 10);
            // A silo that hosts experts of the run: the one with the most leased slots.
            var usage = await client.GetSlotUsageAsync();
            var busiest = usage.OrderByDescending(u => u.Leased).First().Silo;
            var victim = cluster.Silos.First(s => busiest.Contains($":{s.SiloPort}"));
            await victim.DisposeAsync();
            var step = CheckpointStep(Path.Combine(run, "checkpoint.safetensors"));
            output.WriteLine($"killed silo {victim.SiloPort} ({usage.First(u => u.Silo == busiest).Leased} slots leased) after the checkpoint of step {step}");
            Assert.False(File.Exists(Path.Combine(run, "model.safetensors")), "the silo was killed after the run ended");

            using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(4));
            await trainer.WaitForExitAsync(cancel.Token);
            Assert.True(trainer.ExitCode == 0, $"exit {trainer.ExitCode}; stderr: {await stderr}");
            Assert.Contains("recovered in", await stderr); // the trainer's layers noticed the loss, and replayed
            Assert.Equal(Validation(reference), Validation(JsonDocument.Parse(await stdout).RootElement));
            Assert.Equal(File.ReadAllBytes(Path.Combine(root, "straight", "model.safetensors")), File.ReadAllBytes(Path.Combine(run, "model.safetensors")));
            trainer.Dispose();
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task A_sweep_tables_every_expert_count_against_the_dense_model()
    {
        var dir = Directory.CreateTempSubdirectory("moe-lm-sweep-").FullName;
        try
        {
            var sweep = await RunJson($"lm sweep {Tiny} --experts 0,2 --seeds 1,2 --steps 20 --dir {dir} --json", TimeSpan.FromMinutes(5));
            var rows = sweep.GetProperty("rows").EnumerateArray().ToArray();
            Assert.Equal(new[] { 0, 2 }, rows.Select(r => r.GetProperty("experts").GetInt32()));
            foreach (var row in rows)
            {
                var finals = row.GetProperty("final_validation").EnumerateArray().Select(v => v.GetDouble()).ToArray();
                Assert.Equal(2, finals.Length);
                Assert.Equal((finals[0] + finals[1]) / 2, row.GetProperty("median_final_validation").GetDouble(), 12);
                Assert.Equal(2, row.GetProperty("curve").GetArrayLength()); // steps 10 and 20
            }
            // The dense model reaches its own final loss at its final step at the latest.
            Assert.All(rows[0].GetProperty("steps_to_dense_final").EnumerateArray(), s => Assert.InRange(s.GetInt64(), 10, 20));
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(sweep.GetProperty("plot").GetString()!)[..4]);
            // Every run's directory holds its model, plot and summary.
            Assert.All(new[] { "experts-0-seed-1", "experts-0-seed-2", "experts-2-seed-1", "experts-2-seed-2" },
                r => Assert.True(File.Exists(Path.Combine(dir, r, "model.safetensors")), r));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task A_sweep_goes_on_after_an_interruption_and_ends_as_an_uninterrupted_one()
    {
        var root = Directory.CreateTempSubdirectory("moe-lm-sweep-resume-").FullName;
        try
        {
            string Sweep(string dir, string seeds, string more = "") => $"lm sweep {Tiny} --experts 0,2 --seeds {seeds} --steps 20 --dir {dir} --json {more}";
            var whole = await RunJson(Sweep(Path.Combine(root, "whole"), "1,2"), TimeSpan.FromMinutes(5));

            // Seed 1 done; the 2-expert run of seed 2 stopped after its step-10 checkpoint, as a
            // sweep killed there leaves it (trained by hand here with the sweep's options, less
            // what only a finished run writes).
            var dir = Path.Combine(root, "interrupted");
            await RunJson(Sweep(dir, "1"), TimeSpan.FromMinutes(5));
            var cut = Path.Combine(dir, "experts-2-seed-2");
            await RunJson($"lm train {Tiny} --experts 2 --seed 2 --steps 10 --run {cut} --json");
            foreach (var finished in new[] { "summary.json", "model.safetensors", "loss.png" }) File.Delete(Path.Combine(cut, finished));
            var (exit, _, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, Sweep(dir, "1,2"), TimeSpan.FromMinutes(1));
            Assert.Equal(2, exit);
            Assert.Equal($"moe: {Path.Combine(dir, "experts-0-seed-1")} holds an earlier run; pass --resume to go on with the sweep in {dir}, or choose another --dir", stderr.Trim());

            var (resumedExit, stdout, log) = await MoeProcess.RunAsync(MoeProcess.CliDll, Sweep(dir, "1,2", "--resume"), TimeSpan.FromMinutes(5));
            Assert.True(resumedExit == 0, log);
            Assert.Contains("kept the dense model, seed 1: validation", log);
            Assert.Contains("kept 2 experts, seed 1: validation", log);
            Assert.Contains("training the dense model, seed 2, 20 steps", log);
            Assert.Contains("resuming 2 experts, seed 2 at step 10 of 20", log);
            var resumed = JsonDocument.Parse(stdout).RootElement;
            // The same numbers as the sweep that ran through: every run repeats bit for bit.
            foreach (var field in new[] { "final_validation", "curve" })
                Assert.Equal(
                    whole.GetProperty("rows").EnumerateArray().Select(r => r.GetProperty(field).GetRawText()),
                    resumed.GetProperty("rows").EnumerateArray().Select(r => r.GetProperty(field).GetRawText()));

            // A run trained with other settings is not mixed in.
            (exit, _, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, Sweep(dir, "1,2", "--resume --lr 0.002"), TimeSpan.FromMinutes(1));
            Assert.Equal(2, exit);
            Assert.StartsWith($"moe: {Path.Combine(dir, "experts-0-seed-1")} holds a run with another model or other settings than this sweep's", stderr.Trim());
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Theory]
    [InlineData("", "MoE layers on 2 embedded silo(s)")]
    [InlineData("--via-gateways", "MoE layers on 2 embedded silo(s), via gateways")]
    public async Task The_benchmark_times_the_cluster_against_in_process_layers_in_one_run(string more, string clusterSetup)
    {
        var bench = await RunJson($"lm bench {Tiny} --experts 2 --rounds 1 --steps-per-round 3 --json {more}");
        var rows = bench.GetProperty("rows").EnumerateArray().ToArray();
        Assert.Equal(2, rows.Length);
        Assert.Equal(["in-process MoE layers", clusterSetup], rows.Select(r => r.GetProperty("setup").GetString()));
        Assert.All(rows, r => Assert.Equal(3, r.GetProperty("steps").GetInt64()));
        Assert.All(rows, r => Assert.True(r.GetProperty("tokens_per_second").GetDouble() > 0));
        Assert.Equal(rows[1].GetProperty("tokens_per_second").GetDouble() / rows[0].GetProperty("tokens_per_second").GetDouble(),
            bench.GetProperty("cluster_over_in_process").GetDouble(), 9);
    }

    [Fact]
    public async Task Through_the_co_hosted_client_or_the_gateways_the_embedded_cluster_trains_the_same_model()
    {
        var root = Directory.CreateTempSubdirectory("moe-lm-client-").FullName;
        try
        {
            string co = Path.Combine(root, "co-hosted"), tcp = Path.Combine(root, "gateways");
            var viaClient = await RunJson(Train(co, 20));
            var viaGateways = await RunJson(Train(tcp, 20, "--via-gateways"));
            Assert.Equal(Validation(viaClient), Validation(viaGateways));
            Assert.True(File.ReadAllBytes(Path.Combine(co, "model.safetensors")).AsSpan()
                .SequenceEqual(File.ReadAllBytes(Path.Combine(tcp, "model.safetensors"))), "the two runs exported different models");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Theory]
    [InlineData("lm train --experts 1 --steps 5", "moe: --experts is 1; expected 0 (dense) or at least 2")]
    [InlineData("lm train --in-process --via-gateways --steps 5", "moe: --via-gateways is for the embedded cluster's MoE layers; this run has no MoE layers on a cluster")]
    [InlineData("lm train --cluster localhost --gateway-port 1 --via-gateways --steps 5", "moe: --via-gateways is for the embedded cluster's MoE layers; with --cluster the trainer always connects through the gateways")]
    [InlineData("lm train --steps 20000 --batch 8", "moe: --steps is 20000; with --batch 8 and --context 128 one epoch of the training text (18,078 windows) allows 1 to 2259 steps")]
    [InlineData("lm train --d-model 30 --heads 4", "moe: --d-model 30 with --heads 4: expected d_model a positive multiple of heads")]
    [InlineData("lm generate --model /nonexistent/model.safetensors --prompt hi", "moe: model file /nonexistent/model.safetensors does not exist; expected the model.safetensors that ./moe lm train writes into its run directory")]
    [InlineData("lm sweep --experts 0,x", "moe: --experts has \"x\"; expected comma-separated numbers of at least 0")]
    public async Task Bad_input_exits_2_with_one_line(string arguments, string message)
    {
        var (exit, _, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, arguments, TimeSpan.FromMinutes(1));
        Assert.Equal(2, exit);
        Assert.Equal(message, stderr.Trim());
    }

    [Fact]
    public async Task A_run_directory_is_neither_overwritten_nor_resumed_by_mistake()
    {
        var run = Directory.CreateTempSubdirectory("moe-lm-dir-").FullName;
        try
        {
            var (exit, _, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, Train(run, 10, "--resume"), TimeSpan.FromMinutes(1));
            Assert.Equal(2, exit);
            Assert.Equal($"moe: --resume: {run} holds no checkpoint (checkpoint.safetensors); start the run without --resume", stderr.Trim());
            await RunJson(Train(run, 10));
            var before = File.ReadAllBytes(Path.Combine(run, "model.safetensors"));
            (exit, _, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, Train(run, 10), TimeSpan.FromMinutes(1));
            Assert.Equal(2, exit);
            Assert.Equal($"moe: {run} already holds a run (its checkpoint.safetensors); pass --resume to continue it, or choose another --run directory", stderr.Trim());
            (exit, _, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, Train(run, 10, "--resume"), TimeSpan.FromMinutes(1));
            Assert.Equal(2, exit);
            Assert.Equal($"moe: the run in {run} is at step 10 already; pass --steps above it to train further", stderr.Trim());
            Assert.Equal(before, File.ReadAllBytes(Path.Combine(run, "model.safetensors")));
        }
        finally
        {
            Directory.Delete(run, recursive: true);
        }
    }

    private static Process Start(string arguments) => Process.Start(new ProcessStartInfo("dotnet", $"\"{MoeProcess.CliDll}\" {arguments}")
    {
        RedirectStandardOutput = true,
        RedirectStandardError = true,
        UseShellExecute = false,
        WorkingDirectory = MoeProcess.RepositoryRoot,
    })!;

    /// <summary>The step a run's checkpoint names (its safetensors metadata).</summary>
    private static long CheckpointStep(string path) =>
        long.Parse(SafeTensorsHeader(path).GetProperty("__metadata__").GetProperty("step").GetString()!);

    /// <summary>A safetensors file's JSON header, read without TorchSharp.</summary>
    private static JsonElement SafeTensorsHeader(string path)
    {
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                using var file = File.OpenRead(path);
                var length = new byte[8];
                file.ReadExactly(length);
                var header = new byte[BitConverter.ToInt64(length)];
                file.ReadExactly(header);
                return JsonDocument.Parse(header).RootElement.Clone();
            }
            catch (IOException) when (attempt < 5) { Thread.Sleep(20); } // renamed over while being read
        }
    }

    /// <summary>
    /// The uninterrupted run on <paramref name="connect"/>'s cluster, whose layers are then deleted so
    /// that the run under test creates its own under the same names (a layer's initial weights come
    /// from its name and seed).
    /// </summary>
    private static async Task<JsonElement> ReferenceRun(MoeClusterClient client, string connect, string run, int steps)
    {
        var reference = await RunJson(Train(run, steps, connect));
        await (await client.GetLayerAsync("lm-ffn-0")).DeleteAsync();
        await (await client.GetLayerAsync("lm-ffn-1")).DeleteAsync();
        return reference;
    }

    /// <summary>Waits until the trainer has written its checkpoint of step <paramref name="step"/> or a later one.</summary>
    private static async Task WaitForCheckpoint(Process trainer, string run, long step)
    {
        var record = Path.Combine(run, "checkpoint.safetensors");
        var deadline = DateTime.UtcNow.AddMinutes(3);
        while (!(File.Exists(record) && CheckpointStep(record) >= step))
        {
            Assert.False(trainer.HasExited, $"the trainer ended before its checkpoint of step {step}");
            Assert.True(DateTime.UtcNow < deadline, $"no checkpoint of step {step} within 3 minutes");
            await Task.Delay(10);
        }
    }
}
