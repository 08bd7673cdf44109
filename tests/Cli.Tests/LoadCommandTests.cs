using System.Text.Json;
using MoeCluster.Client.Tests;
using Xunit;
using Xunit.Abstractions;

namespace MoeCluster.Cli.Tests;

/// <summary><c>./moe load</c> against three silo processes: concurrent trainers and inference clients, no errors.</summary>
public class LoadCommandTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Load_runs_trainers_and_inference_clients_against_three_silos_without_errors()
    {
        await using var cluster = await ProcessCluster.StartAsync(silos: 3, "--devices cpu --experts-per-device 8 --threads 1");
        await (await cluster.Connect()).DisposeAsync(); // waits until the silos know each other's slots
        var (exit, stdout, stderr) = await MoeProcess.RunAsync(MoeProcess.CliDll,
            $"load --cluster {cluster.Address} --cluster-id {cluster.ClusterId} --clients 4 --seconds 6 --tokens 64 --json", TimeSpan.FromMinutes(3));
        output.WriteLine(stdout);
        Assert.True(exit == 0, $"exit {exit}; stdout: {stdout}; stderr: {stderr}");
        // The SDK would log a recovery as a warning line before the report: there must be none.
        Assert.DoesNotContain("warn:", stdout);
        using var report = JsonDocument.Parse(stdout);
        var root = report.RootElement;
        Assert.Equal(0, root.GetProperty("errors").GetInt64());
        var rows = root.GetProperty("rows").EnumerateArray().ToList();
        Assert.Equal(["train step (fwd+bwd+step)", "inference forward"], rows.Select(r => r.GetProperty("kind").GetString()));
        Assert.All(rows, r =>
        {
            Assert.Equal(2, r.GetProperty("clients").GetInt32());
            Assert.True(r.GetProperty("operations").GetInt64() > 0);
            Assert.InRange(r.GetProperty("p50_ms").GetDouble(), 0.01, r.GetProperty("p99_ms").GetDouble());
        });

        var (badExit, _, badErr) = await MoeProcess.RunAsync(MoeProcess.CliDll, "load --clients 0", TimeSpan.FromMinutes(1));
        Assert.Equal(2, badExit);
        Assert.Equal("moe: --clients is 0; expected ≥ 1", badErr.Trim());
    }
}
