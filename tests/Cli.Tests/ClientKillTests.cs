using System.Diagnostics;
using MoeCluster.Client;
using MoeCluster.Client.Tests;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Cli.Tests;

/// <summary>
/// Fault injection: a client process (<c>./moe load</c>) killed with SIGKILL while its micro-batches
/// sit between forward and backward. The cluster cannot tell a dead client from a slow one, so it
/// frees their saved state (the router's pending batches, the experts' saved forwards) once
/// <see cref="LayerSpec.SavedForwardTimeout"/> passes, logs it, and counts it in the layer's stats.
/// </summary>
public class ClientKillTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_client_killed_between_forward_and_backward_has_its_saved_state_freed()
    {
        await using var cluster = await ProcessCluster.StartAsync(silos: 2, "--devices cpu --experts-per-device 8 --threads 1");
        await using var client = await cluster.Connect();
        const double timeoutSeconds = 3;
        // The kill has to land while the router holds a micro-batch (4 forwards, then 4 backwards,
        // then the step): when it lands in a backward or a step there is nothing to free; try again.
        for (int attempt = 1; attempt <= 4; attempt++)
        {
            var start = new ProcessStartInfo("dotnet",
                $"\"{MoeProcess.CliDll}\" load --cluster {cluster.Address} --cluster-id {cluster.ClusterId} --clients 1 --seconds 600 " +
                $"--tokens 64 --micro-batches 4 --saved-forward-timeout {timeoutSeconds} --connect-timeout 60 --json")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
                WorkingDirectory = MoeProcess.RepositoryRoot,
            };
            using var load = Process.Start(start)!;
            var errors = new System.Text.StringBuilder();
            load.ErrorDataReceived += (_, e) => { lock (errors) errors.AppendLine(e.Data); };
            load.BeginOutputReadLine();
            load.BeginErrorReadLine();
            var name = $"load-{load.Id}-0";
            RemoteMoeLayer? layer = null;
            var deadline = DateTime.UtcNow.AddSeconds(90);
            try
            {
                // Wait until the client trains, then kill it while the router holds one of its micro-batches.
                while (true)
                {
                    Assert.True(DateTime.UtcNow < deadline, "the load process did not train its layer within 90 s");
                    if (load.HasExited)
                        lock (errors) Assert.Fail($"the load process exited with {load.ExitCode}: {errors}");
                    if ((await client.ListLayersAsync()).Contains(name))
                    {
                        layer ??= await client.GetLayerAsync(name);
                        var s = await layer.GetStatsAsync();
                        if (s.Version >= 2 && s.PendingBatches > 0) break;
                    }
                    await Task.Delay(5);
                }
                load.Kill();
                await load.WaitForExitAsync();
            }
            finally
            {
                if (!load.HasExited) load.Kill();
            }

            // Calls that were in flight finish; what the router still holds then is the dead client's.
            Assert.NotNull(layer);
            await Task.Delay(500);
            var held = await layer.GetStatsAsync();
            output.WriteLine($"attempt {attempt}: after the kill the router holds {held.PendingBatches} micro-batch(es), " +
                $"the experts {held.Experts.Sum(e => e.Expert.PendingForwards)} saved forward(s), at version {held.Version}");
            if (held.PendingBatches == 0)
            {
                await layer.DeleteAsync();
                continue;
            }

            var watch = Stopwatch.StartNew();
            LayerStats stats;
            do
            {
                await Task.Delay(200);
                stats = await layer.GetStatsAsync();
            } while ((stats.PendingBatches > 0 || stats.Experts.Any(e => e.Expert.PendingForwards > 0)) && watch.Elapsed < TimeSpan.FromSeconds(60));
            output.WriteLine($"freed within {watch.Elapsed.TotalSeconds:F1} s of the check: {stats.ExpiredBatches} micro-batch(es) on the router, " +
                $"{stats.Experts.Sum(e => e.Expert.ExpiredForwards)} saved forward(s) on the experts");
            Assert.Equal(0, stats.PendingBatches);
            Assert.All(stats.Experts, e => Assert.Equal(0, e.Expert.PendingForwards));
            Assert.Equal(0, stats.KeptAnswers);
            Assert.True(stats.ExpiredBatches >= held.PendingBatches, $"{stats.ExpiredBatches} expired for {held.PendingBatches} held");
            Assert.True(stats.Experts.Sum(e => e.Expert.ExpiredForwards) > 0);
            Assert.Contains(cluster.Silos, s => s.Log.Contains($"Layer {name} freed "));
            Assert.Equal(held.Version, stats.Version); // nothing was applied on the dead client's behalf

            // The layer serves others afterwards.
            using var x = randn(16, 64);
            using (var forward = await layer.ForwardAsync(x, train: false)) Assert.Equal(new long[] { 16, 64 }, forward.Y.shape);
            await layer.DeleteAsync();
            return;
        }
        Assert.Fail("in 4 attempts the kill never landed while the router held a micro-batch");
    }
}
