using System.Text.Json.Serialization;

namespace MoeCluster.Bench;

/// <summary>
/// One line of the benchmark's table and of its JSON. <see cref="Setup"/> is a, b or c (the
/// reference layer, one in-process silo, two silo processes); <see cref="Mode"/> names it with
/// what was timed. The share is the row's GEMM arithmetic per second over the machine's GEMM rate.
/// <see cref="PageFaults"/>: the median minor page faults of the benchmark's own process per call
/// (where (a) and (b) compute; (c) computes in its silo processes). <see cref="JitMs"/>: the time
/// the benchmark's own process spent compiling code during the row's timed calls, all together:
/// about zero in the steady state the rows are meant to time (see <see cref="SteadyStateJit"/>).
/// </summary>
public sealed record BenchRow(
    [property: JsonPropertyName("config")] string Config,
    [property: JsonPropertyName("setup")] string Setup,
    [property: JsonPropertyName("mode")] string Mode,
    [property: JsonPropertyName("median_ms")] double MedianMs,
    [property: JsonPropertyName("tokens_per_s")] double TokensPerSecond,
    [property: JsonPropertyName("ratio_to_reference")] double? RatioToReference,
    [property: JsonPropertyName("gemm_share")] double GemmShare,
    [property: JsonPropertyName("page_faults")] long? PageFaults = null,
    [property: JsonPropertyName("jit_ms")] double? JitMs = null);

/// <summary>What <c>--json FILE</c> writes.</summary>
public sealed record BenchReport(
    [property: JsonPropertyName("gemm_gflops")] double GemmGflops,
    [property: JsonPropertyName("rows")] IReadOnlyList<BenchRow> Rows,
    [property: JsonPropertyName("peak_memory_mib")] IReadOnlyDictionary<string, double> PeakMemoryMiB,
    [property: JsonPropertyName("machine")] string Machine,
    [property: JsonPropertyName("weights_read_ms")] double? WeightsReadMs = null);
