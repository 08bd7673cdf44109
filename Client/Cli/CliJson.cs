using System.Text.Json;

namespace MoeCluster.Cli;

/// <summary>How the CLI's <c>--json</c> outputs name things: snake_case, as the demo's summary always has.</summary>
public static class CliJson
{
    public static readonly JsonSerializerOptions Options = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
}
