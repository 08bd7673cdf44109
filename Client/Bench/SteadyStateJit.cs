using System.Diagnostics;

namespace MoeCluster.Bench;

/// <summary>
/// The benchmark times the layer's steady state, not .NET's warm-up. With tiered compilation (the
/// default) the runtime first compiles methods quickly and recompiles the hot ones, fully
/// optimised, on a background thread once they have run 30 times: methods called once per step
/// are recompiled around the 30th step, and in a process that trained (a) and (b) in turn the JIT
/// spent 6.4 s over the first 100 s doing so, on one of this machine's two cores while the layer
/// being timed wanted both. So the benchmark runs without tiering (<c>Bench.csproj</c>) and starts
/// its silo processes without it: every method is compiled once, fully optimised, at its first
/// call, which the warm-up repeats make. Silos themselves keep tiering, which halves their start
/// (README, Performance).
/// </summary>
public static class SteadyStateJit
{
    /// <summary>The runtime's switch for tiered compilation, as an environment variable of a child process.</summary>
    public const string TieredCompilationVariable = "DOTNET_TieredCompilation";

    /// <summary>Whether this process runs with tiered compilation: from its runtime configuration or its environment.</summary>
    public static bool Tiered =>
        Environment.GetEnvironmentVariable(TieredCompilationVariable) is { } variable
            ? variable != "0"
            : AppContext.GetData("System.Runtime.TieredCompilation") is not (false or "false" or "False");

    /// <summary>Starts a child process (a silo of row (c)) without tiered compilation, as this process runs.</summary>
    public static ProcessStartInfo WithoutTiering(ProcessStartInfo start)
    {
        start.Environment[TieredCompilationVariable] = "0";
        return start;
    }

    /// <summary>Time this process's JIT has spent compiling so far, on every thread.</summary>
    public static double CompilationMs() => System.Runtime.JitInfo.GetCompilationTime(currentThread: false).TotalMilliseconds;

    public static string Describe() => Tiered ? "tiered compilation on" : "tiered compilation off in this process and its silo processes";
}
