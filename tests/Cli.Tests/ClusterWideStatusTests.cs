using System.Text.Json;
using MoeCluster.Client.Tests;
using Orleans;
using Xunit;
using static TorchSharp.torch;
using MoeCluster.Hosting;

namespace MoeCluster.Cli.Tests;

/// <summary>
/// The status page's cluster-wide counters: the page of one silo adds up the recoveries and expert
/// migrations every live silo counted, including those that happened on the other silo.
/// </summary>
public class ClusterWideStatusTests
{
    [Fact]
    public async Task The_status_api_adds_up_the_recoveries_and_migrations_of_every_silo()
    {
        await using var cluster = await ProcessCluster.StartAsync(silos: 1, "--devices cpu --experts-per-device 8 --threads 1");
        var statusPort = LoopbackPorts.Free(1)[0];
        await cluster.AddSiloAsync($"--status-port {statusPort}");
        await using var client = await cluster.Connect();
        using var http = new HttpClient();
        async Task<JsonElement> Snapshot() =>
            JsonDocument.Parse(await http.GetStringAsync($"http://127.0.0.1:{statusPort}/api/moe")).RootElement;

        var before = await Snapshot();
        var pageSilo = before.GetProperty("silo").GetString()!;
        var silos = (await client.GetSlotUsageAsync()).Select(u => u.Silo).Distinct().ToArray();
        Assert.Equal(2, silos.Length);
        var otherSilo = Assert.Single(silos, s => s != pageSilo);
        Assert.Equal(silos.Order(StringComparer.Ordinal), before.GetProperty("siloTotals").EnumerateArray().Select(t => t.GetProperty("silo").GetString()));
        Assert.Equal(0, before.GetProperty("recoveries").GetInt64());
        Assert.Equal(0, before.GetProperty("migrations").GetInt64());

        var layer = await client.CreateLayerAsync("counted", new LayerSpec { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, Seed = 12 });
        using (var x = randn(16, 8))
        using (var forward = await layer.ForwardAsync(x))
        using (var dx = await layer.BackwardAsync(forward.BatchId, x))
            await layer.StepAsync();
        await layer.FlushAsync();

        // Live migrations, counted on the silo each expert arrives at: one onto the silo without
        // the page (from the page's silo; if none is there, one is moved there first).
        var placed = (await layer.GetStatsAsync()).Experts.Select(e => (e.Expert.Index, e.Expert.Placement.Silo)).ToArray();
        int toPage = 0;
        var mover = placed.FirstOrDefault(p => p.Silo == pageSilo).Index;
        if (!placed.Any(p => p.Silo == pageSilo))
        {
            mover = placed[0].Index;
            await layer.MoveExpertAsync(mover, pageSilo);
            toPage++;
        }
        var move = await layer.MoveExpertAsync(mover, otherSilo);
        Assert.Equal(otherSilo, move.ToSilo);
        // A recovery, counted on the silo of the router (either one).
        await client.Orleans.GetGrain<IMoeRouterGrain>("counted").Recover();

        var deadline = DateTime.UtcNow.AddSeconds(30);
        JsonElement now;
        while (!((now = await Snapshot()).GetProperty("recoveries").GetInt64() == 1 && now.GetProperty("migrations").GetInt64() == 1 + toPage))
        {
            Assert.True(DateTime.UtcNow < deadline, $"the page never counted 1 recovery and {1 + toPage} migration(s): {now}");
            await Task.Delay(300);
        }
        var totals = now.GetProperty("siloTotals").EnumerateArray().ToDictionary(t => t.GetProperty("silo").GetString()!);
        Assert.Equal(1, totals[otherSilo].GetProperty("migrations").GetInt64());
        Assert.Equal(toPage, totals[pageSilo].GetProperty("migrations").GetInt64());
        // The page's own silo's counters are its part of the sums.
        Assert.Equal(toPage, now.GetProperty("migrationsToThisSilo").GetInt64());
        Assert.Equal(totals[pageSilo].GetProperty("recoveries").GetInt64(), now.GetProperty("recoveriesOnThisSilo").GetInt64());

        // `rebalance --dry-run` and `inspect` against the same two silos: exit codes and --json.
        var connect = $"--cluster {cluster.Address} --cluster-id {cluster.ClusterId}";
        var plan = await MoeProcess.RunAsync(MoeProcess.CliDll, $"rebalance {connect} --layer counted --dry-run --json", TimeSpan.FromMinutes(1));
        Assert.True(plan.ExitCode == 0, plan.Stderr);
        var planned = JsonDocument.Parse(plan.Stdout).RootElement;
        Assert.Equal("counted", planned.GetProperty("plan").GetProperty("layer").GetString());
        Assert.Equal(silos.Order(StringComparer.Ordinal), planned.GetProperty("plan").GetProperty("load_before").EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal));
        Assert.Equal(0, planned.GetProperty("moves").GetArrayLength());
        var inspect = await MoeProcess.RunAsync(MoeProcess.CliDll, $"inspect {connect} --layer counted --json", TimeSpan.FromMinutes(1));
        Assert.True(inspect.ExitCode == 0, inspect.Stderr);
        var report = JsonDocument.Parse(inspect.Stdout).RootElement;
        Assert.Equal("counted", report.GetProperty("layer").GetString());
        Assert.Equal([0, 1, 2, 3], report.GetProperty("experts").EnumerateArray().Select(e => e.GetProperty("index").GetInt32()));
        Assert.Equal(2, (await MoeProcess.RunAsync(MoeProcess.CliDll, $"rebalance {connect} --layer nowhere", TimeSpan.FromMinutes(1))).ExitCode);
        Assert.Equal(2, (await MoeProcess.RunAsync(MoeProcess.CliDll, $"inspect {connect} --layer nowhere --json", TimeSpan.FromMinutes(1))).ExitCode);
        await layer.DeleteAsync();
    }
}
