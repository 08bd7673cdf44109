using System.Text.Json.Nodes;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MoeCluster.Cli.Tests;

/// <summary>The silo's status page in a real headless Chromium, the Orleans Dashboard beside it, and the Prometheus endpoint.</summary>
[Collection(RunningClusterCollection.Name)]
public class StatusPageTests(RunningCluster running, ITestOutputHelper output)
{
    [Fact]
    public async Task The_page_lists_a_layers_experts_and_its_heat_map_changes_after_traffic()
    {
        const string name = "page-layer";
        var layer = await running.Client.CreateLayerAsync(name, new LayerSpec { DModel = 8, DFF = 16, NumExperts = 4, TopK = 2, Seed = 7 });
        await using var browser = await HeadlessChromium.StartAsync();
        await browser.Navigate($"http://127.0.0.1:{running.StatusPort}/?interval=300");
        var rows = $"document.querySelectorAll('tr.expert[data-layer=\"{name}\"]')";
        await browser.WaitFor($"{rows}.length === 4", TimeSpan.FromSeconds(30), "the page listing the layer's 4 experts");
        var cells = $"[...document.querySelectorAll('table.heat[data-layer=\"{name}\"] td.cell')].map(c => Number(c.dataset.tokens))";
        var before = (await browser.Evaluate(cells))!.AsArray().Select(v => v!.GetValue<double>()).ToArray();
        Assert.NotEmpty(before);
        Assert.All(before, t => Assert.Equal(0, t));
        var devices = (await browser.Evaluate($"[...{rows}].map(r => r.children[2].textContent)"))!.AsArray();
        Assert.All(devices, d => Assert.Equal("cpu", d!.GetValue<string>()));

        using (var generator = new Generator(8))
            for (int i = 0; i < 3; i++)
            {
                using var x = randn(32, 8, generator: generator);
                using var forward = await layer.ForwardAsync(x, train: false);
            }
        var routed = (await layer.GetStatsAsync()).TokensRouted;
        Assert.True(routed > 0);
        await browser.WaitFor($"[...{rows}].reduce((s, r) => s + Number(r.dataset.routed), 0) === {routed} && {cells}.some(t => t > 0)",
            TimeSpan.FromSeconds(30), $"the heat map showing the {routed} tokens routed");
        var shot = Path.Combine(AppContext.BaseDirectory, "status-page.png");
        await browser.Screenshot(shot);
        output.WriteLine($"screenshot of the status page: {shot}");
        Assert.True(new FileInfo(shot).Length > 1000, "the screenshot is nearly empty");

        await browser.Navigate($"http://127.0.0.1:{running.StatusPort}/dashboard/");
        await browser.WaitFor("document.readyState === 'complete' && document.body.innerText.length > 0", TimeSpan.FromSeconds(30),
            "the Orleans Dashboard rendering");
        await layer.DeleteAsync();
    }

    [Fact]
    public async Task Prometheus_scrapes_the_MoeCluster_instruments()
    {
        var layer = await running.Client.CreateLayerAsync("scraped", new LayerSpec { DModel = 8, DFF = 16, NumExperts = 2, TopK = 1, Seed = 9 });
        using (var x = randn(16, 8))
        using (var forward = await layer.ForwardAsync(x))
        using (var dx = await layer.BackwardAsync(forward.BatchId, x))
            await layer.StepAsync();
        using var http = new HttpClient();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        string text;
        // The exporter caches a scrape briefly; ask until the step shows.
        while (!(text = await http.GetStringAsync($"http://localhost:{running.PrometheusPort}/metrics")).Split('\n')
            .Any(line => line.StartsWith("moe_layer_step_duration_milliseconds_count{", StringComparison.Ordinal) && line.Contains("layer=\"scraped\"")))
        {
            Assert.True(DateTime.UtcNow < deadline, $"no step of layer scraped in the scrape:\n{text}");
            await Task.Delay(500);
        }
        Assert.Contains("moe_tokens_routed_total{", text);
        Assert.Contains("moe_checkpoint_write_bytes_total{", text);
        await layer.DeleteAsync();
    }
}
