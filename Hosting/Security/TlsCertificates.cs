using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Orleans.Connections.Security;

namespace MoeCluster.Hosting.Security;

/// <summary>
/// The certificates of <c>--tls-cert</c> and <c>--tls-ca</c>, shared by the silo and the SDK (this
/// file is linked into the Client project): a PEM file holding a certificate and its private key
/// (or a PKCS#12 file), and the PEM certificate of the cluster's own certificate authority.
/// With a CA, a peer must present a certificate that chains to it; nothing else gets in.
/// </summary>
public static class TlsCertificates
{
    /// <summary>A certificate with its private key, from PEM (certificate and key in one file) or PKCS#12 (.pfx, .p12).</summary>
    public static X509Certificate2 LoadCertificate(string path)
    {
        if (!File.Exists(path)) throw new ArgumentException($"TLS certificate file {path} does not exist; expected a PEM file with a certificate and its private key, or a .pfx");
        try
        {
            if (path.EndsWith(".pfx", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".p12", StringComparison.OrdinalIgnoreCase))
                return X509CertificateLoader.LoadPkcs12FromFile(path, password: null);
            using var pem = X509Certificate2.CreateFromPemFile(path);
            if (!pem.HasPrivateKey) throw new ArgumentException($"TLS certificate file {path} has no private key; expected the certificate and its key in one PEM file");
            // SslStream on Linux needs the key in a PKCS#12 form, not the ephemeral one PEM gives.
            return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), password: null);
        }
        catch (System.Security.Cryptography.CryptographicException e)
        {
            throw new ArgumentException($"TLS certificate file {path} could not be read: {e.Message}");
        }
    }

    public static X509Certificate2 LoadAuthority(string path)
    {
        if (!File.Exists(path)) throw new ArgumentException($"TLS CA file {path} does not exist; expected the PEM certificate of the cluster's certificate authority");
        try
        {
            return X509CertificateLoader.LoadCertificateFromFile(path);
        }
        catch (System.Security.Cryptography.CryptographicException e)
        {
            throw new ArgumentException($"TLS CA file {path} could not be read: {e.Message}");
        }
    }

    /// <summary>
    /// TLS between silos and from clients. With <paramref name="authority"/>: every peer must present
    /// a certificate issued by it (mutual TLS); peers are known by their CA, not their host name,
    /// as silos and clients connect by address. <paramref name="hasCertificate"/>: false for a client
    /// without one of its own, which the silos then refuse.
    /// </summary>
    public static void Configure(TlsOptions options, X509Certificate2? authority, bool hasCertificate = true)
    {
        if (!hasCertificate) options.ClientCertificateMode = RemoteCertificateMode.NoCertificate;
        if (authority is null) return;
        options.RemoteCertificateMode = RemoteCertificateMode.RequireCertificate;
        if (hasCertificate) options.ClientCertificateMode = RemoteCertificateMode.RequireCertificate;
        options.RemoteCertificateValidation = (certificate, _, _) => IssuedBy(certificate, authority);
    }

    public static bool IssuedBy(X509Certificate2 certificate, X509Certificate2 authority)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(authority);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(certificate) && chain.ChainElements[^1].Certificate.Thumbprint == authority.Thumbprint;
    }
}
