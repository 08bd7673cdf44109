namespace MoeCluster.Hosting;

/// <summary>How one silo takes part in a MoeCluster: its device slots and its place in the cluster.</summary>
public sealed record MoeSiloOptions
{
    /// <summary><c>localhost</c> (the silos of one machine find each other by port) or <c>redis://host:port</c>.</summary>
    public string Cluster { get; init; } = "localhost";
    public string ClusterId { get; init; } = "moecluster";
    public string ServiceId { get; init; } = "moecluster";
    public int SiloPort { get; init; } = 11111;
    public int GatewayPort { get; init; } = 30000;
    /// <summary>With localhost membership, the silo port of the silo that the others join.</summary>
    public int PrimarySiloPort { get; init; } = 11111;
    /// <summary><c>auto</c> (every CUDA device, else the CPU), <c>cpu</c>, or a list such as <c>cuda:0,cuda:1</c>.</summary>
    public string Devices { get; init; } = "auto";
    public int ExpertsPerDevice { get; init; } = 4;
    /// <summary>Place experts here even when all slots are leased, rather than failing.</summary>
    public bool AllowOvercommit { get; init; }
    /// <summary>libtorch intra-op threads; 0 means one per core.</summary>
    public int TorchThreads { get; init; }
    /// <summary>
    /// CPU experts computing at once, the libtorch threads shared among them (see <c>ComputeQueues</c>);
    /// 0 or 1 (the default): one expert at a time on all of the threads.
    /// </summary>
    public int ExpertWorkers { get; init; }
    public string SiloName { get; init; } = $"moe-silo-{Environment.ProcessId}";
    /// <summary>Checkpoints: a directory shared by the cluster's silos (under it, one per cluster id), or <c>redis://host:port</c>.</summary>
    public string Store { get; init; } = CheckpointStoreSelection.DefaultDirectory;
    /// <summary>TLS for silo-to-silo and client traffic: a PEM file with this silo's certificate and key (or a .pfx); null is plain TCP.</summary>
    public string? TlsCertificate { get; init; }
    /// <summary>With <see cref="TlsCertificate"/>: the cluster's CA (PEM); every silo and client must then present a certificate it issued.</summary>
    public string? TlsAuthority { get; init; }
    /// <summary>Port of the status page (the Orleans Dashboard under <c>/dashboard</c>, the MoE page at <c>/</c>); 0: no page.</summary>
    public int StatusPort { get; init; }
    /// <summary>Address the status page listens on: loopback unless another is asked for.</summary>
    public string StatusHost { get; init; } = "127.0.0.1";
    /// <summary>
    /// When set, the status page answers only requests that carry this token (header
    /// <c>Authorization: Bearer TOKEN</c>, or <c>?token=TOKEN</c> once, which sets a cookie for the
    /// page's own requests); others get 401. Null: no token asked.
    /// </summary>
    public string? StatusToken { get; init; }
    /// <summary>
    /// With Redis membership: the address other machines reach this silo at. Loopback (the default)
    /// keeps a cluster on one machine; another address makes the silo listen on every interface
    /// and register that one.
    /// </summary>
    public string Address { get; init; } = "127.0.0.1";
    /// <summary>An OTLP collector (<c>http://host:4317</c>) to export the metrics to; null: no export.</summary>
    public string? OtlpEndpoint { get; init; }
    /// <summary>OTLP over <c>grpc</c> (port 4317 by convention) or <c>http</c> (protobuf over HTTP, 4318, path <c>/v1/metrics</c>).</summary>
    public string OtlpProtocol { get; init; } = "grpc";
    /// <summary>Seconds between two OTLP exports (OpenTelemetry's default: 60).</summary>
    public double OtlpIntervalSeconds { get; init; } = 60;
    /// <summary>Port of a Prometheus scrape endpoint (<c>http://localhost:PORT/metrics</c>); 0: none.</summary>
    public int PrometheusPort { get; init; }
}
