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

        // Training steps: the layer's step rate (over the page's last 10 s) rises above zero, and
        // the cluster-wide counters are on the page.
        using (var generator = new Generator(9))
            for (int step = 0; step < 3; step++)
            {
                using var x = randn(32, 8, generator: generator);
                using var forward = await layer.ForwardAsync(x);
                using var dx = await layer.BackwardAsync(forward.BatchId, x);
                await layer.StepAsync();
            }
        var section = $"document.querySelector('section.layer[data-layer=\"{name}\"]')";
        await browser.WaitFor($"{section} && Number({section}.dataset.stepRate) > 0 && {section}.textContent.includes('version 3 ')",
            TimeSpan.FromSeconds(30), "the page showing the layer's step rate after 3 steps");
        var counters = (await browser.Evaluate("[document.getElementById('counters').dataset.recoveries, document.getElementById('counters').dataset.migrations]"))!.AsArray();
        Assert.All(counters, c => Assert.True(long.Parse(c!.GetValue<string>()) >= 0));
        Assert.Contains("1 silo(s) answering", (await browser.Evaluate("document.getElementById('counters').textContent"))!.GetValue<string>());
        var drops = (await browser.Evaluate($"[Number({section}.dataset.dropped), [...{rows}].reduce((s, r) => s + Number(r.dataset.dropped), 0)]"))!.AsArray();
        Assert.Equal(drops[1]!.GetValue<double>(), drops[0]!.GetValue<double>());

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
    public async Task OTLP_export_sends_the_MoeCluster_instruments_after_a_training_step()
    {
        var layer = await running.Client.CreateLayerAsync("otlp-sent", new LayerSpec { DModel = 8, DFF = 16, NumExperts = 2, TopK = 1, Seed = 10 });
        using (var x = randn(16, 8))
        using (var forward = await layer.ForwardAsync(x))
        using (var dx = await layer.BackwardAsync(forward.BatchId, x))
            await layer.StepAsync();
        // Instrument names and the layer's tag value are plain strings in the protobuf body; the
        // silo exports every second, so the step shows within a few exports even under load.
        string[] wanted = ["moe.layer.step.duration", "moe.tokens.routed", "moe.layer.forward.duration", "moe.checkpoint.write.bytes", "otlp-sent", "moecluster-silo"];
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!running.Otlp.AnyMetricsRequestContains(wanted))
        {
            Assert.True(DateTime.UtcNow < deadline,
                $"no OTLP export with {string.Join(", ", wanted)} within 60 s; {running.Otlp.Requests.Count} request(s) to " +
                string.Join(", ", running.Otlp.Requests.Select(r => r.Path).Distinct()));
            await Task.Delay(500);
        }
        var request = running.Otlp.Requests.First(r => r.Path == "/v1/metrics");
        Assert.Equal("application/x-protobuf", request.ContentType);
        Assert.DoesNotContain(running.Otlp.Requests, r => r.Path != "/v1/metrics");
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
