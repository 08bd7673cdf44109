using System.CommandLine;
using MoeCluster.Client;

namespace MoeCluster.Cli;

/// <summary>The options every command that talks to a running cluster shares: where it is, and its id.</summary>
public sealed class ClusterConnection
{
    /// <param name="embeddedByDefault">The command runs its own silos unless <c>--cluster</c> is given (the demo).</param>
    public ClusterConnection(bool embeddedByDefault = false)
    {
        Cluster = new("--cluster")
        {
            Description = embeddedByDefault
                ? "Use running silos instead of starting them in this process: localhost (with --gateway-port) or redis://host:port"
                : "Membership of the cluster to use: localhost (with --gateway-port) or redis://host:port",
        };
        if (embeddedByDefault) Cluster.HelpName = "localhost|redis://host:port";
        else Cluster.DefaultValueFactory = _ => "localhost";
    }

    public Option<string> Cluster { get; }

    public Option<int[]> GatewayPorts { get; } = new("--gateway-port")
    {
        Description = "With localhost membership: gateway port(s) of the silos",
        DefaultValueFactory = _ => [30000],
        AllowMultipleArgumentsPerToken = true,
    };

    public Option<string> ClusterId { get; } = new("--cluster-id")
    {
        Description = "Orleans cluster id of the silos",
        DefaultValueFactory = _ => new MoeClientOptions().ClusterId,
    };

    public Option<string?> TlsCertificate { get; } = new("--tls-cert")
    {
        Description = "For a cluster with TLS: PEM file with this client's certificate and private key (or a .pfx)",
    };

    public Option<string?> TlsAuthority { get; } = new("--tls-ca")
    {
        Description = "For a cluster with TLS: the cluster's CA certificate (PEM)",
    };

    public void AddTo(Command command)
    {
        command.Options.Add(Cluster);
        command.Options.Add(GatewayPorts);
        command.Options.Add(ClusterId);
        command.Options.Add(TlsCertificate);
        command.Options.Add(TlsAuthority);
    }

    public MoeClientOptions Options(ParseResult parse) => new()
    {
        Cluster = parse.GetValue(Cluster)!,
        GatewayPorts = parse.GetValue(GatewayPorts)!,
        ClusterId = parse.GetValue(ClusterId)!,
        TlsCertificate = parse.GetValue(TlsCertificate),
        TlsAuthority = parse.GetValue(TlsAuthority),
    };
}
