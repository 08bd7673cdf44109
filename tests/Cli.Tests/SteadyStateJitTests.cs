using System.Diagnostics;
using MoeCluster.Bench;
using Xunit;

namespace MoeCluster.Cli.Tests;

/// <summary>The benchmark's silo processes start without tiered compilation, as the benchmark itself runs.</summary>
public class SteadyStateJitTests
{
    [Fact]
    public void A_silo_process_of_the_benchmark_starts_without_tiered_compilation_and_with_its_arguments_unchanged()
    {
        var start = new ProcessStartInfo("dotnet", "silo.dll --port 1");
        start.Environment["MOE_OTHER"] = "kept";

        var same = SteadyStateJit.WithoutTiering(start);

        Assert.Same(start, same);
        Assert.Equal("0", start.Environment[SteadyStateJit.TieredCompilationVariable]);
        Assert.Equal("DOTNET_TieredCompilation", SteadyStateJit.TieredCompilationVariable);
        Assert.Equal("kept", start.Environment["MOE_OTHER"]);
        Assert.Equal("silo.dll --port 1", start.Arguments);
    }
}
