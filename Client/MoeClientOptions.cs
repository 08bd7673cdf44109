namespace MoeCluster.Client;

/// <summary>Where the SDK finds the cluster.</summary>
public sealed record MoeClientOptions
{
    /// <summary><c>localhost</c> (gateways on this machine, see <see cref="GatewayPorts"/>) or <c>redis://host:port</c>.</summary>
    public string Cluster { get; init; } = "localhost";
    public string ClusterId { get; init; } = "moecluster";
    public string ServiceId { get; init; } = "moecluster";
    /// <summary>With localhost membership, the gateway ports to try.</summary>
    public int[] GatewayPorts { get; init; } = [30000];
    /// <summary>How long connecting may keep trying (no gateway up, a refused TLS handshake) before it fails.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>How long one call may take before it fails with a timeout.</summary>
    public TimeSpan ResponseTimeout { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>How long a layer waits for a lost silo's grains to come back before its call fails.</summary>
    public TimeSpan RecoveryTimeout { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>
    /// Check that every x and ∂L/∂y a layer sends holds only finite numbers (no NaN or ±Inf), and
    /// refuse the call with an <see cref="ArgumentException"/> before anything is sent. On by
    /// default; it costs one pass over the tensor on the client.
    /// </summary>
    public bool ValidateInputs { get; init; } = true;
    /// <summary>For a cluster with TLS: a PEM file with this client's certificate and private key (or a .pfx).</summary>
    public string? TlsCertificate { get; init; }
    /// <summary>For a cluster with TLS: its CA (PEM); the silos must present a certificate it issued.</summary>
    public string? TlsAuthority { get; init; }
}
