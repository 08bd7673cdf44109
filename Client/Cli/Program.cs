using System.CommandLine;
using MoeCluster.Cli;

var root = new RootCommand("moe: the MoeCluster command-line tool. `./moe <command> --help` shows a command's options.")
{
    DemoCommand.Create(),
    ExportCommands.Export(),
    ExportCommands.Import(),
    InspectCommand.Create(),
    SweepCommand.Create(),
    ExpertsCommand.Create(),
    RebalanceCommand.Create(),
};
try
{
    return await root.Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e) when (e is ArgumentException or InvalidOperationException or TimeoutException)
{
    // Bad input or a refused operation: one line and a non-zero exit, not a stack trace.
    Console.Error.WriteLine($"moe: {e.Message}");
    return 2;
}
