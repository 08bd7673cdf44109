using MoeCluster.Bench.Plots;
using Xunit;

namespace MoeCluster.Cli.Tests;

/// <summary>The benchmark's ratio chart, from rows as the benchmark reports them (running the benchmark itself takes minutes).</summary>
public class BenchRatioPlotTests
{
    [Fact]
    public void Ratios_become_a_png_and_no_rows_are_refused()
    {
        var path = Path.Combine(Directory.CreateTempSubdirectory("moe-bench-plot-").FullName, "sub", "ratios.png");
        try
        {
            var written = BenchRatioPlot.Write(path, [("T=4096 f32\nfwd+bwd", 1.12), ("T=16\nforward p50", 1.05)]);
            Assert.Equal(path, written);
            var bytes = File.ReadAllBytes(path);
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
            Assert.True(bytes.Length > 5000, $"a {bytes.Length}-byte PNG is too small to hold two labelled bars");
            var refused = Assert.Throws<ArgumentException>(() => BenchRatioPlot.Write(path, []));
            Assert.StartsWith("no ratios to plot", refused.Message);
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(Path.GetDirectoryName(path))!, recursive: true);
        }
    }
}
