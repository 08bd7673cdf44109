using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace MoeCluster.Cli;

/// <summary>How every <c>--json</c> output is written: snake_case names, enums as names, indented.</summary>
public static class CliJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>One line per object, for streams such as <c>status --watch --json</c>.</summary>
    public static readonly JsonSerializerOptions Lines = new(Options) { WriteIndented = false };

    public static void Print<T>(T value, bool oneLine = false) =>
        Console.WriteLine(JsonSerializer.Serialize(value, oneLine ? Lines : Options));

    public static Option<bool> Option() => new("--json") { Description = "Print the result as JSON on stdout instead of tables" };
}
