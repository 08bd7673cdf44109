using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace MoeCluster.Client.Tests;

/// <summary>
/// A certificate authority of the test's own and certificates it issues, written as PEM files
/// (certificate and private key in one file, as <c>--tls-cert</c> takes them) in a temporary directory.
/// </summary>
public sealed class TestCertificates : IDisposable
{
    private readonly X509Certificate2 authority;
    private readonly ECDsa authorityKey;

    public TestCertificates(string name)
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("moe-test-tls-").FullName;
        authorityKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", authorityKey, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        authority = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-2), DateTimeOffset.UtcNow.AddDays(60));
        AuthorityPath = Path.Combine(Directory, $"{name}.pem");
        File.WriteAllText(AuthorityPath, authority.ExportCertificatePem());
    }

    public string Directory { get; }
    public string AuthorityPath { get; }

    /// <summary>Issues a certificate for <paramref name="subject"/>, usable as TLS server and client; returns its PEM file.</summary>
    public string Issue(string subject)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={subject}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false)); // server and client authentication
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(System.Net.IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        var serial = RandomNumberGenerator.GetBytes(8);
        using var certificate = request.Create(authority, DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30), serial);
        var path = Path.Combine(Directory, $"{subject}.pem");
        File.WriteAllText(path, certificate.ExportCertificatePem() + "\n" + key.ExportPkcs8PrivateKeyPem());
        return path;
    }

    public void Dispose()
    {
        authority.Dispose();
        authorityKey.Dispose();
        try { System.IO.Directory.Delete(Directory, recursive: true); } catch (IOException) { }
    }
}
