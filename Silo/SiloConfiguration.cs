using Microsoft.Extensions.Configuration;
using MoeCluster.Hosting;

namespace MoeCluster.Silo;

/// <summary>
/// A silo's settings before its command line: the built-in defaults of <see cref="MoeSiloOptions"/>,
/// then the section <c>Silo</c> of <c>appsettings.json</c> in the current directory (or of the file
/// in <c>MOE_CONFIG</c>), then environment variables <c>MOE_Silo__Name=value</c>. Options given on
/// the command line win over all three. A key that names no option is an error, so a typo is not
/// silently ignored.
/// </summary>
public static class SiloConfiguration
{
    public const string Section = "Silo";
    public const string FileVariable = "MOE_CONFIG";

    public static MoeSiloOptions Load()
    {
        var file = Environment.GetEnvironmentVariable(FileVariable) is { Length: > 0 } named ? Path.GetFullPath(named) : null;
        if (file is not null && !File.Exists(file))
            throw new InvalidOperationException($"{FileVariable} is '{file}', which does not exist; expected a JSON file with a \"{Section}\" section");
        var configuration = new ConfigurationBuilder()
            .AddJsonFile(file ?? Path.Combine(Directory.GetCurrentDirectory(), "appsettings.json"), optional: file is null)
            .AddEnvironmentVariables("MOE_")
            .Build();
        var section = configuration.GetSection(Section);
        return section.Exists()
            ? section.Get<MoeSiloOptions>(o => o.ErrorOnUnknownConfiguration = true) ?? new MoeSiloOptions()
            : new MoeSiloOptions();
    }
}
