using System.CommandLine;
using MoeCluster.Client;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace MoeCluster.Cli;

/// <summary><c>moe status</c>: silos, devices, layers, experts and load; <c>--watch</c> refreshes in place.</summary>
public static class StatusCommand
{
    public static Command Create()
    {
        var connection = new ClusterConnection();
        var json = CliJson.Option();
        var watch = new Option<bool>("--watch") { Description = "Refresh until Ctrl+C (with --json: one JSON object per line and refresh)" };
        var interval = new Option<double>("--interval") { Description = "Seconds between refreshes with --watch", DefaultValueFactory = _ => 2.0 };
        var count = new Option<int>("--count") { Description = "With --watch: stop after this many refreshes (0: until Ctrl+C)" };
        var command = new Command("status", "Shows the cluster: every silo's devices, expert slots and load, every layer and where its experts are.\n\n" +
            "Example: ./moe status --cluster redis://127.0.0.1:6379 --watch\n" + ExitCodes.Help) { json, watch, interval, count };
        connection.AddTo(command);
        command.SetAction(async (parse, cancel) =>
        {
            var seconds = parse.GetValue(interval);
            if (seconds <= 0) throw new ArgumentException($"--interval is {seconds}; expected a number of seconds > 0");
            await using var client = await connection.ConnectAsync(parse, cancel);
            if (!parse.GetValue(watch))
            {
                var status = await ClusterStatus.ReadAsync(client);
                if (parse.GetValue(json)) CliJson.Print(status);
                else AnsiConsole.Write(Render(status));
                return ExitCodes.Ok;
            }
            var limit = parse.GetValue(count);
            var delay = TimeSpan.FromSeconds(seconds);
            try
            {
                if (parse.GetValue(json))
                {
                    for (int i = 0; limit == 0 || i < limit; i++)
                    {
                        if (i > 0) await Task.Delay(delay, cancel);
                        CliJson.Print(await ClusterStatus.ReadAsync(client), oneLine: true);
                    }
                    return ExitCodes.Ok;
                }
                await AnsiConsole.Live(Render(await ClusterStatus.ReadAsync(client))).StartAsync(async live =>
                {
                    for (int i = 1; limit == 0 || i < limit; i++)
                    {
                        await Task.Delay(delay, cancel);
                        live.UpdateTarget(Render(await ClusterStatus.ReadAsync(client), DateTime.Now));
                    }
                });
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested)
            {
                // Ctrl+C ends a watch; that is how it is meant to stop.
            }
            return ExitCodes.Ok;
        });
        return command;
    }

    public static IRenderable Render(ClusterStatus status, DateTime? refreshed = null)
    {
        var silos = new Table().Title("silos").AddColumns("silo", "device")
            .AddColumn(new TableColumn("experts / slots").RightAligned())
            .AddColumn(new TableColumn("tokens routed").RightAligned());
        foreach (var s in status.Silos)
            foreach (var d in s.Devices)
                silos.AddRow(Markup.Escape(s.Silo), Markup.Escape(d.Device), $"{d.Leased} / {d.Slots}", s.TokensRouted.ToString("N0"));
        var parts = new List<IRenderable> { silos };
        if (status.Layers.Length == 0) parts.Add(new Markup("[grey]no layers[/]"));
        parts.AddRange(status.Layers.Select(ExpertsTable));
        if (refreshed is { } at) parts.Add(new Markup($"[grey]refreshed {at:HH:mm:ss}; Ctrl+C stops[/]"));
        return new Rows(parts);
    }

    public static Table ExpertsTable(LayerSummary layer)
    {
        var experts = new Table()
            .Title($"layer {Markup.Escape(layer.Name)}: version {layer.Version}, {layer.NumExperts} experts, top-{layer.TopK}, router on {Markup.Escape(layer.RouterSilo)}")
            .AddColumns("expert", "silo", "device")
            .AddColumn(new TableColumn("tokens routed").RightAligned())
            .AddColumn(new TableColumn("dropped").RightAligned())
            .AddColumn(new TableColumn("compute ms").RightAligned());
        foreach (var e in layer.Experts)
            experts.AddRow(e.Index.ToString(), Markup.Escape(e.Silo), Markup.Escape(e.Device),
                e.TokensRouted.ToString("N0"), e.TokensDropped.ToString("N0"), e.ComputeMilliseconds.ToString("N0"));
        return experts;
    }
}
