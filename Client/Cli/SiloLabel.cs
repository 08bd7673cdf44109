using System.Text.RegularExpressions;

namespace MoeCluster.Cli;

/// <summary>Orleans writes a silo as <c>S127.0.0.1:11111:123456789</c> (with a generation); tables show <c>127.0.0.1:11111</c>.</summary>
public static partial class SiloLabel
{
    public static string Short(string silo)
    {
        var m = Address().Match(silo);
        return m.Success ? m.Groups[1].Value : silo;
    }

    [GeneratedRegex(@"^S?([^:]+:\d+)(:\d+)?$")]
    private static partial Regex Address();
}
