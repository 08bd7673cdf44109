using System.CommandLine;
using System.Diagnostics;

namespace MoeCluster.Cli;

/// <summary>
/// <c>moe bench</c>: runs the benchmark (Client/Bench, built beside the CLI) with the arguments
/// given, as <c>./moe bench</c> does. It is its own executable so that the CLI does not carry it.
/// </summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var command = new Command("bench", "Runs the benchmark (moe-bench): the layer through an in-process silo against the reference layer, " +
            "then checkpoint writes. Every argument goes to it: --quick, --repeats N, --redis host:port.\n\n" +
            "Example: ./moe bench --quick\n" + ExitCodes.Help)
        {
            TreatUnmatchedTokensAsErrors = false,
        };
        var arguments = new Argument<string[]>("arguments") { Description = "Arguments for moe-bench", Arity = ArgumentArity.ZeroOrMore };
        command.Arguments.Add(arguments);
        command.SetAction(async (parse, cancel) =>
        {
            var dll = BenchDll();
            if (!File.Exists(dll))
                throw new InvalidOperationException($"the benchmark is not built: {dll} is missing; expected it from `dotnet build MoeCluster.sln -c Release`");
            var start = new ProcessStartInfo("dotnet") { UseShellExecute = false };
            start.ArgumentList.Add(dll);
            foreach (var a in (parse.GetValue(arguments) ?? []).Concat(parse.UnmatchedTokens)) start.ArgumentList.Add(a);
            using var process = Process.Start(start)!;
            try
            {
                await process.WaitForExitAsync(cancel);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw;
            }
            return process.ExitCode;
        });
        return command;
    }

    /// <summary>Client/Bench/bin/{configuration}/net10.0/moe-bench.dll, from the CLI's own Client/Cli/bin/{configuration}/net10.0/.</summary>
    private static string BenchDll()
    {
        var own = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var framework = own.Name;
        var configuration = own.Parent!.Name;
        var client = own.Parent.Parent!.Parent!.Parent!.FullName;
        return Path.Combine(client, "Bench", "bin", configuration, framework, "moe-bench.dll");
    }
}
