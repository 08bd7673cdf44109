using System.Net;
using System.Net.Sockets;

namespace MoeCluster.Bench;

public static class FreePorts
{
    /// <summary>Loopback ports free right now, all different (their listeners are open at once).</summary>
    public static int[] Take(int count)
    {
        var listeners = Enumerable.Range(0, count).Select(_ => new TcpListener(IPAddress.Loopback, 0)).ToList();
        foreach (var l in listeners) l.Start();
        var ports = listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port).ToArray();
        foreach (var l in listeners) l.Stop();
        return ports;
    }
}
