using System.CommandLine;
using MoeCluster.Silo;

// The generic host handles SIGTERM and Ctrl+C itself, with a graceful stop that hands experts
// off; System.CommandLine's own handler would start the process exit in parallel with it.
return await SiloCommand.Create().Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });
