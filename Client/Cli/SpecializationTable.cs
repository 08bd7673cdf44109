using Spectre.Console;

namespace MoeCluster.Cli;

/// <summary>A <see cref="SpecializationReport"/> as a console table: one row per expert.</summary>
public static class SpecializationTable
{
    public static void Write(IAnsiConsole console, SpecializationReport report, Func<int, string>? tokenName = null)
    {
        tokenName ??= t => $"{t}";
        var table = new Table()
            .Title($"what each expert receives: layer \"{Markup.Escape(report.Layer)}\" at version {report.Version}, {report.Tokens:N0} labelled tokens in {report.Batches} batch(es)")
            .AddColumn("expert")
            .AddColumn(new TableColumn("routed").RightAligned())
            .AddColumn(new TableColumn("drop share").RightAligned())
            .AddColumn("top classes")
            .AddColumn(new TableColumn("entropy").RightAligned())
            .AddColumn("top tokens");
        foreach (var e in report.Experts)
        {
            var classes = e.Routed == 0 ? "" : string.Join("  ", e.ClassCounts.Select((n, c) => (n, c)).Where(p => p.n > 0)
                .OrderByDescending(p => p.n).Take(3).Select(p => $"{p.c}:{(double)p.n / e.ClassCounts.Sum():P0}"));
            var tokens = string.Join(", ", e.TopTokens.Take(3).Select(t => $"{tokenName(t.TokenId)} ×{t.Count}"));
            table.AddRow($"{e.Index}", $"{e.Routed:N0}", $"{e.DropShare:P1}", Markup.Escape(classes),
                report.Classes > 0 ? $"{e.ClassEntropyBits:F2}" : "", Markup.Escape(tokens));
        }
        console.Write(table);
        if (report.Classes > 1)
            console.MarkupLine($"[grey]entropy of the classes each expert receives: 0 bits = one class only; {Math.Log2(report.Classes):F2} bits = all {report.Classes} classes alike[/]");
    }
}
