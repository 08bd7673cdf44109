using System.Net;
using System.Net.Sockets;

namespace MoeCluster.Hosting;

/// <summary>
/// Loopback ports for silos started on this machine (the CLI's embedded cluster, the benchmark's
/// silos, the tests' silo processes): ports that are free right now, all different, since their
/// listeners are open at once. Another process may still take one before the silo binds it.
/// </summary>
public static class LoopbackPorts
{
    public static int[] Free(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var listeners = Enumerable.Range(0, count).Select(_ => new TcpListener(IPAddress.Loopback, 0)).ToList();
        try
        {
            foreach (var l in listeners) l.Start();
            return listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port).ToArray();
        }
        finally
        {
            foreach (var l in listeners) l.Stop();
        }
    }
}
