using System.Diagnostics;
using MoeCluster.Grains.Checkpoints;
using MoeCluster.Hosting.Checkpoints;
using Spectre.Console;

namespace MoeCluster.Bench;

/// <summary>
/// Checkpoint write throughput of the stores, with records the size of one expert of the
/// standard layer (d 512, d_ff 2048, F32, AdamW): 8 MB of weights and 16 MB of moments.
/// </summary>
public static class CheckpointBenchmark
{
    public const int RecordBytes = 24 << 20;

    public static async Task RunAsync(bool quick, string? redis)
    {
        var writes = quick ? 3 : 10;
        var record = new byte[RecordBytes];
        new Random(1).NextBytes(record);
        var table = new Table().AddColumns("store", "record", "writes", "median ms", "MB/s");
        var dir = Directory.CreateTempSubdirectory("moe-bench-store-");
        try
        {
            table.AddRow(Row("directory (fsync + rename)", new DirectoryCheckpointStore(dir.FullName), record, writes));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
        if (redis is not null)
        {
            await using var store = await RedisCheckpointStore.ConnectAsync(redis, $"moe:bench:{Guid.NewGuid():N}");
            table.AddRow(Row($"redis {redis} (1 MiB chunks)", store, record, writes));
            await store.DeleteAsync("bench/expert");
        }
        AnsiConsole.Write(table);
    }

    private static string[] Row(string name, ICheckpointStore store, byte[] record, int writes)
    {
        var times = new List<double>();
        for (int i = 0; i <= writes; i++)
        {
            var watch = Stopwatch.StartNew();
            store.WriteAsync("bench/expert", i, record).GetAwaiter().GetResult();
            if (i > 0) times.Add(watch.Elapsed.TotalMilliseconds); // the first write warms up
        }
        times.Sort();
        var median = times[times.Count / 2];
        return [name, $"{RecordBytes >> 20} MiB", $"{writes}", $"{median:F1}", $"{RecordBytes / 1e6 / (median / 1000):F0}"];
    }
}
