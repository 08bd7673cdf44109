using System.Net;
using System.Net.Sockets;
using Xunit;

namespace MoeCluster.Hosting.Tests;

public class LoopbackPortsTests
{
    [Fact]
    public void Free_ports_are_all_different_and_can_be_bound_on_loopback_at_once()
    {
        var ports = LoopbackPorts.Free(6);

        Assert.Equal(6, ports.Length);
        Assert.Equal(6, ports.Distinct().Count());
        var listeners = ports.Select(p => new TcpListener(IPAddress.Loopback, p)).ToList();
        try
        {
            foreach (var l in listeners) l.Start(); // throws if a port was still held
        }
        finally
        {
            foreach (var l in listeners) l.Stop();
        }
    }

    [Fact]
    public void No_ports_asked_gives_none_and_a_negative_count_is_refused()
    {
        Assert.Empty(LoopbackPorts.Free(0));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => LoopbackPorts.Free(-1));
        Assert.Equal("count", e.ParamName);
    }
}
