using System.Text.RegularExpressions;
using Xunit;

namespace MoeCluster.Cli.Tests;

/// <summary>Every command and sub-command of <c>moe</c> has help with an example; no cluster needed.</summary>
public class HelpTests
{
    /// <summary>The names under "Commands:" in a help text.</summary>
    private static string[] Subcommands(string help)
    {
        var at = help.IndexOf("\nCommands:", StringComparison.Ordinal);
        if (at < 0) return [];
        return help[(at + "\nCommands:".Length)..].Split('\n')
            .TakeWhile(line => line.Length == 0 || line.StartsWith("  ", StringComparison.Ordinal))
            .Select(line => Regex.Match(line, @"^  (\S+)"))
            .Where(m => m.Success)
            .Select(m => m.Groups[1].Value)
            .ToArray();
    }

    [Fact]
    public async Task Every_command_has_help_with_an_example()
    {
        var root = await MoeProcess.RunAsync(MoeProcess.CliDll, "--help", TimeSpan.FromMinutes(1));
        Assert.True(root.ExitCode == 0, root.Stderr);
        var top = Subcommands(root.Stdout);
        // The commands issue 7 names, and the others the CLI grew since.
        Assert.Superset(new HashSet<string> { "silo", "demo", "status", "layers", "experts", "rebalance", "checkpoint", "bench" }, top.ToHashSet());

        var checkedCommands = new List<string>();
        var missing = new List<string>();
        var queue = new Queue<string>(top);
        while (queue.Count > 0)
        {
            // A few at a time: each is a process start.
            var batch = Enumerable.Range(0, Math.Min(4, queue.Count)).Select(_ => queue.Dequeue()).ToArray();
            var helps = await Task.WhenAll(batch.Select(c => MoeProcess.RunAsync(MoeProcess.CliDll, $"{c} --help", TimeSpan.FromMinutes(1))));
            foreach (var (command, help) in batch.Zip(helps))
            {
                checkedCommands.Add(command);
                Assert.True(help.ExitCode == 0, $"moe {command} --help: exit {help.ExitCode}; {help.Stderr}");
                if (!help.Stdout.Contains("Example", StringComparison.Ordinal)) missing.Add(command);
                foreach (var sub in Subcommands(help.Stdout)) queue.Enqueue($"{command} {sub}");
            }
        }
        Assert.Contains("layers create", checkedCommands);
        Assert.Contains("checkpoint import", checkedCommands);
        Assert.Contains("experts split", checkedCommands);
        Assert.True(missing.Count == 0, $"help without an example: {string.Join("; ", missing)} (of {checkedCommands.Count} commands)");
    }
}
