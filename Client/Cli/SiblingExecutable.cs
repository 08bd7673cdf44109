using System.CommandLine;
using System.Diagnostics;

namespace MoeCluster.Cli;

/// <summary>
/// A command that runs another executable of the solution (the silo, the benchmark) with every
/// argument it was given, from its own build output beside the CLI's: Client/Cli/bin/{configuration}/{framework}/.
/// </summary>
public static class SiblingExecutable
{
    /// <param name="project">The project's folder relative to the repository root, e.g. <c>Silo</c>.</param>
    public static Command Create(string name, string description, string project, string dll)
    {
        var command = new Command(name, description) { TreatUnmatchedTokensAsErrors = false };
        var arguments = new Argument<string[]>("arguments") { Description = $"Arguments for {dll}", Arity = ArgumentArity.ZeroOrMore };
        command.Arguments.Add(arguments);
        command.SetAction(async (parse, cancel) =>
        {
            var path = PathOf(project, dll);
            if (!File.Exists(path))
                throw new InvalidOperationException($"{path} is missing; expected it built by `dotnet build MoeCluster.sln -c Release` (./moe does that)");
            var start = new ProcessStartInfo("dotnet") { UseShellExecute = false };
            start.ArgumentList.Add(path);
            foreach (var a in (parse.GetValue(arguments) ?? []).Concat(parse.UnmatchedTokens)) start.ArgumentList.Add(a);
            using var process = Process.Start(start)!;
            try
            {
                await process.WaitForExitAsync(cancel);
            }
            catch (OperationCanceledException)
            {
                // Ctrl+C or SIGTERM reached this process: pass on a SIGTERM, so that a silo hands its experts off
                // (its graceful stop) rather than dying, and wait for it.
                if (!process.HasExited)
                    using (var term = Process.Start("kill", $"-TERM {process.Id}")!) await term.WaitForExitAsync(CancellationToken.None);
                await process.WaitForExitAsync(CancellationToken.None);
            }
            return process.ExitCode;
        });
        return command;
    }

    private static string PathOf(string project, string dll)
    {
        var own = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var configuration = own.Parent!.Name;
        var root = own.Parent.Parent!.Parent!.Parent!.Parent!.FullName;
        return Path.Combine(root, project, "bin", configuration, own.Name, dll);
    }
}
