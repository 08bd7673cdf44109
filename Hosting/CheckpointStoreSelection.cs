using MoeCluster.Grains.Checkpoints;
using MoeCluster.Hosting.Checkpoints;

namespace MoeCluster.Hosting;

/// <summary>
/// <c>--store</c>: a directory (the default <c>./data/checkpoints</c>; on a shared volume for a
/// multi-machine cluster) or <c>redis://host:port</c> for clusters without one.
/// </summary>
public static class CheckpointStoreSelection
{
    public const string DefaultDirectory = "./data/checkpoints";

    public static ICheckpointStore Open(string store, string clusterId)
    {
        var s = string.IsNullOrWhiteSpace(store) ? DefaultDirectory : store.Trim();
        if (s.StartsWith("redis://", StringComparison.OrdinalIgnoreCase))
        {
            var hostPort = s["redis://".Length..].TrimEnd('/');
            if (hostPort.Length == 0) throw new ArgumentException($"--store is '{store}'; expected a directory or redis://host:port");
            // Connect now: a silo whose checkpoint store is unreachable must not start, rather than
            // fail its first step. Once connected, the client reconnects by itself after an outage.
            return RedisCheckpointStore.ConnectAsync(hostPort, $"moe:{clusterId}:ckpt").GetAwaiter().GetResult();
        }
        if (s.Contains("://"))
            throw new ArgumentException($"--store is '{store}'; expected a directory or redis://host:port");
        // One directory per cluster id, so that clusters sharing a volume keep apart.
        return new DirectoryCheckpointStore(Path.Combine(Path.GetFullPath(s), clusterId));
    }
}
