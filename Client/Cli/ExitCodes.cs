namespace MoeCluster.Cli;

/// <summary>What every <c>moe</c> command exits with.</summary>
public static class ExitCodes
{
    /// <summary>The command did what it was asked.</summary>
    public const int Ok = 0;
    /// <summary>The command line could not be parsed (System.CommandLine's own code).</summary>
    public const int Usage = 1;
    /// <summary>Bad input or a refused operation: a missing layer, a spec the cluster rejects, a file of the wrong shape.</summary>
    public const int Refused = 2;
    /// <summary>The cluster could not be reached, or a call to it failed.</summary>
    public const int ClusterFailed = 3;

    public const string Help = "Exit codes: 0 done, 1 bad command line, 2 bad input or refused by the cluster, 3 cluster unreachable or a call failed.";
}
