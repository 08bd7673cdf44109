using System.Text.Json;
using Xunit;

namespace MoeCluster.Cli.Tests;

public class DemoCommandTests
{
    [Fact]
    public async Task Demo_trains_end_to_end_on_an_embedded_cluster_and_its_loss_falls()
    {
        var plots = Directory.CreateTempSubdirectory("moe-demo-plots-").FullName;
        var (exit, stdout, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, $"demo --steps 40 --json --plots {plots}", TimeSpan.FromMinutes(3));
        Assert.True(exit == 0, $"exit {exit}; stderr: {stderr}");
        using var summary = JsonDocument.Parse(stdout);
        var root = summary.RootElement;
        var initial = root.GetProperty("initial_loss").GetDouble();
        var final = root.GetProperty("final_loss").GetDouble();
        Assert.Equal(40, root.GetProperty("steps").GetInt32());
        Assert.Equal(8, root.GetProperty("experts").GetInt32());
        Assert.Equal(2, root.GetProperty("silos").GetInt32());
        Assert.True(final < 0.5 * initial, $"loss fell only from {initial} to {final}");
        var tokens = root.GetProperty("tokens_per_expert").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        Assert.Equal(8, tokens.Length);
        // Every assignment is routed or dropped: 40 steps × 256 tokens and the 1,024-token evaluation, × top-2.
        Assert.Equal((40 * 256 + 1024) * 2, tokens.Sum() + root.GetProperty("dropped").GetInt64());

        // The loss curve and tokens per expert over steps, as PNG files, named in the summary.
        var written = root.GetProperty("plots").EnumerateArray().Select(p => p.GetString()!).ToArray();
        Assert.Equal(new[] { Path.Combine(plots, "loss.png"), Path.Combine(plots, "tokens-per-expert.png") }, written);
        foreach (var png in written)
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(png)[..4]);
        Directory.Delete(plots, recursive: true);
    }

    [Fact]
    public async Task Bad_options_exit_non_zero_with_one_line()
    {
        var (exit, _, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, "demo --steps 0", TimeSpan.FromMinutes(1));
        Assert.Equal(2, exit);
        Assert.Equal("moe: --steps is 0; expected ≥ 1", stderr.Trim());
        (exit, _, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll, "demo --checkpoint-every 0", TimeSpan.FromMinutes(1));
        Assert.Equal(2, exit);
        Assert.EndsWith("moe: checkpoint interval is 0; expected ≥ 1 (steps between checkpoints)", stderr.Trim());
    }
}
