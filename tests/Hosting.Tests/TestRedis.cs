namespace MoeCluster.Hosting.Tests;

/// <summary>The Redis server that <c>./moe test</c> starts for the suite (MOE_TEST_REDIS=host:port).</summary>
public static class TestRedis
{
    public static string Address => Environment.GetEnvironmentVariable("MOE_TEST_REDIS") is { Length: > 0 } address
        ? address
        : throw new InvalidOperationException("MOE_TEST_REDIS is not set: run the suite with ./moe test, which installs and starts a Redis server for it");
}
