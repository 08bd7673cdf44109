using System.CommandLine;
using MoeCluster.Cli;

var root = new RootCommand("moe: the MoeCluster command-line tool. `./moe <command> --help` shows a command's options.\n" + ExitCodes.Help)
{
    DemoCommand.Create(),
    StatusCommand.Create(),
    LayersCommand.Create(),
    CheckpointCommand.Create(),
    BenchCommand.Create(),
    SiloCommand.Create(),
    ExportCommands.Export(),
    ExportCommands.Import(),
    InspectCommand.Create(),
    SweepCommand.Create(),
    LoadCommand.Create(),
    ExpertsCommand.Create(),
    RebalanceCommand.Create(),
    MoeCluster.Cli.Lm.LmCommand.Create(),
};
try
{
    return await root.Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (ClusterUnreachableException e)
{
    Console.Error.WriteLine($"moe: the cluster could not be reached: {e.Message}");
    return ExitCodes.ClusterFailed;
}
catch (Exception e) when (e is ArgumentException or InvalidOperationException or TimeoutException)
{
    // Bad input or a refused operation: one line and a non-zero exit, not a stack trace.
    Console.Error.WriteLine($"moe: {e.Message}");
    return ExitCodes.Refused;
}
catch (Exception e) when (e is not OperationCanceledException)
{
    // The cluster is out of reach or a call to it failed: one line that says which.
    Console.Error.WriteLine($"moe: a call to the cluster failed: {e.GetType().Name}: {e.Message}");
    return ExitCodes.ClusterFailed;
}
