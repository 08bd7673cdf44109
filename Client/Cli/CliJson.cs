using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace MoeCluster.Cli;

/// <summary>How the CLI's <c>--json</c> outputs name things: snake_case, as the demo's summary always has.</summary>
public static class CliJson
{
    public static readonly JsonSerializerOptions Options = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>What the state-reading commands print: indented, enums by name.</summary>
    public static readonly JsonSerializerOptions Indented = new(Options)
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>One object per line, for streams such as <c>status --watch --json</c>.</summary>
    public static readonly JsonSerializerOptions Lines = new(Indented) { WriteIndented = false };

    public static void Print<T>(T value, bool oneLine = false) =>
        Console.WriteLine(JsonSerializer.Serialize(value, oneLine ? Lines : Indented));

    public static Option<bool> Option() => new("--json") { Description = "Print the result as JSON on stdout instead of tables" };
}
