using System.Text.Json;
using Xunit;

namespace MoeCluster.Cli.Tests;

/// <summary>The benchmark run once, quick, as <c>./moe bench --quick --json FILE</c> runs it, so that it cannot rot.</summary>
public class BenchCommandTests
{
    [Fact]
    public async Task Quick_bench_times_every_config_and_mode_in_all_three_setups_and_writes_the_json_rows()
    {
        var json = Path.Combine(Path.GetTempPath(), $"moe-bench-{Guid.NewGuid():N}.json");
        try
        {
            // Under a minute on an idle 2-core machine; the limit leaves room for a loaded one.
            var (exit, stdout, stderr) = await MoeProcess.RunAsync(MoeProcess.BenchDll, $"--quick --json \"{json}\"", TimeSpan.FromMinutes(6));
            Assert.True(exit == 0, $"exit {exit}; stderr: {stderr}\nstdout: {stdout}");
            Assert.Contains("share of GEMM rate", stdout);

            using var report = JsonDocument.Parse(await File.ReadAllTextAsync(json));
            var gemm = report.RootElement.GetProperty("gemm_gflops").GetDouble();
            Assert.True(gemm > 0, $"gemm_gflops is {gemm}");
            // The memory floor of the 16-token forward, measured in the same run.
            var weightsRead = report.RootElement.GetProperty("weights_read_ms").GetDouble();
            Assert.True(weightsRead > 0, $"weights_read_ms is {weightsRead}");
            Assert.Contains("weights read once", stdout);
            Assert.Contains("minor page faults per call in this process", stdout);
            // Rows time the steady state: the bench runs without tiered compilation (SteadyStateJit).
            Assert.Contains("tiered compilation off", report.RootElement.GetProperty("machine").GetString());
            Assert.Contains("JIT compilation in this process during the timed calls", stdout);
            var rows = report.RootElement.GetProperty("rows").EnumerateArray().ToList();
            foreach (var row in rows)
            {
                foreach (var field in new[] { "config", "mode", "median_ms", "tokens_per_s", "ratio_to_reference", "gemm_share" })
                    Assert.True(row.TryGetProperty(field, out _), $"row {row} lacks {field}");
                var setup = row.GetProperty("setup").GetString();
                Assert.True(row.GetProperty("median_ms").GetDouble() > 0, $"row {row}");
                Assert.True(row.GetProperty("tokens_per_s").GetDouble() > 0, $"row {row}");
                Assert.True(row.GetProperty("gemm_share").GetDouble() > 0, $"row {row}");
                var ratio = row.GetProperty("ratio_to_reference");
                // (a) is the reference itself; every cluster row has a ratio to it.
                Assert.Equal(setup == "a", ratio.ValueKind == JsonValueKind.Null);
                // Page faults of the bench's own process per call, read from /proc on Linux.
                Assert.True(row.GetProperty("page_faults").GetInt64() >= 0, $"row {row}");
                Assert.True(row.GetProperty("jit_ms").GetDouble() >= 0, $"row {row}");
            }
            // 4 configs × 2 modes × 3 setups, less (a) of the BF16-wire config, which has no wire.
            Assert.Equal(22, rows.Count);
            var configs = rows.Select(r => r.GetProperty("config").GetString()).Distinct().ToList();
            Assert.Equal(4, configs.Count);
            foreach (var setup in new[] { "a", "b", "c" })
                foreach (var mode in new[] { "forward", "fwd+bwd+step" })
                    Assert.Contains(rows, r => r.GetProperty("setup").GetString() == setup && r.GetProperty("mode").GetString()!.EndsWith(mode));
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Fact]
    public async Task Micro_batches_in_flight_are_timed_beside_b_and_c_and_one_is_refused()
    {
        var refused = await MoeProcess.RunAsync(MoeProcess.BenchDll, "--micro-batches 1", TimeSpan.FromMinutes(1));
        Assert.Equal(2, refused.ExitCode);
        Assert.Contains("moe-bench: --micro-batches is 1; expected ≥ 2 (one micro-batch is what (b) and (c) time already)", refused.Stderr);

        var json = Path.Combine(Path.GetTempPath(), $"moe-bench-{Guid.NewGuid():N}.json");
        try
        {
            var (exit, stdout, stderr) = await MoeProcess.RunAsync(MoeProcess.BenchDll,
                $"--quick --config small-batch --micro-batches 2 --json \"{json}\"", TimeSpan.FromMinutes(4));
            Assert.True(exit == 0, $"exit {exit}; stderr: {stderr}\nstdout: {stdout}");
            using var report = JsonDocument.Parse(await File.ReadAllTextAsync(json));
            var rows = report.RootElement.GetProperty("rows").EnumerateArray().ToList();
            // a, b, c, and b and c with 2 micro-batches in flight, each forward and fwd+bwd+step.
            Assert.Equal(10, rows.Count);
            foreach (var setup in new[] { "b×2", "c×2" })
                foreach (var mode in new[] { "forward", "fwd+bwd+step" })
                {
                    var row = Assert.Single(rows, r => r.GetProperty("setup").GetString() == setup && r.GetProperty("mode").GetString()!.EndsWith(mode));
                    Assert.StartsWith($"({setup[0]}) 2 micro-batches in flight · ", row.GetProperty("mode").GetString());
                    Assert.True(row.GetProperty("ratio_to_reference").GetDouble() > 0, $"row {row}");
                }
        }
        finally
        {
            File.Delete(json);
        }
    }
}
