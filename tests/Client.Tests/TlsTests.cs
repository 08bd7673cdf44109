using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;
using MoeCluster.Hosting;

namespace MoeCluster.Client.Tests;

/// <summary>
/// A silo process with mutual TLS (<c>--tls-cert</c>, <c>--tls-ca</c>): a client with a certificate
/// from the cluster's CA trains; one without a certificate, or with one from another CA, is refused.
/// </summary>
public class TlsTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Only_a_client_with_a_certificate_from_the_cluster_CA_gets_in()
    {
        using var cluster = new TestCertificates("moe-test-ca");
        using var stranger = new TestCertificates("stranger-ca");
        var siloCertificate = cluster.Issue("silo");
        var store = Directory.CreateTempSubdirectory("moe-test-store-").FullName;
        var ports = LoopbackPorts.Free(2);
        try
        {
            await using var silo = await SiloProcess.StartAsync(
                $"--primary-port {ports[0]} --devices cpu --experts-per-device 4 --store {store} --tls-cert {siloCertificate} --tls-ca {cluster.AuthorityPath}",
                ports[0], ports[1]);

            await using (var client = await MoeClusterClient.ConnectAsync(Options(ports[1], cluster.Issue("trainer"), cluster.AuthorityPath)))
            {
                var layer = await client.CreateLayerAsync("tls", new LayerSpec { DModel = 8, DFF = 16, NumExperts = 2, TopK = 1, Seed = 1 });
                using var x = ones(4, 8);
                using var forward = await layer.ForwardAsync(x, train: false);
                Assert.Equal([4L, 8L], forward.Y.shape);
            }

            var noCertificate = await Refused(Options(ports[1], null, cluster.AuthorityPath));
            var otherAuthority = await Refused(Options(ports[1], stranger.Issue("intruder"), stranger.AuthorityPath));
            output.WriteLine($"without a certificate: {noCertificate}\nwith another CA's: {otherAuthority}");
        }
        finally
        {
            Directory.Delete(store, recursive: true);
        }
    }

    private static MoeClientOptions Options(int gatewayPort, string? certificate, string authority) => new()
    {
        GatewayPorts = [gatewayPort],
        TlsCertificate = certificate,
        TlsAuthority = authority,
        ResponseTimeout = TimeSpan.FromSeconds(10),
        ConnectTimeout = TimeSpan.FromSeconds(5),
    };

    /// <summary>The client cannot connect: the silo refused its handshake, and the SDK says so within its connect timeout.</summary>
    private static async Task<string> Refused(MoeClientOptions options)
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => MoeClusterClient.ConnectAsync(options));
        Assert.StartsWith("cannot connect to the cluster (localhost, id moecluster) within 5 s: Unable to connect to any of the 1 available gateways.", error.Message);
        return error.Message;
    }
}
