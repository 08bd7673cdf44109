namespace MoeCluster.Cli;

/// <summary>No gateway of the cluster answered in time; the CLI exits with <see cref="ExitCodes.ClusterFailed"/>.</summary>
public sealed class ClusterUnreachableException(string message, Exception? inner = null) : Exception(message, inner);
