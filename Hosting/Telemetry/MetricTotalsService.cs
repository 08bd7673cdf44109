using Microsoft.Extensions.Logging;
using Orleans.Runtime;
using Orleans.Runtime.Services;
using Orleans.Services;

namespace MoeCluster.Hosting.Telemetry;

/// <summary>One silo's recovery and migration totals since it started.</summary>
[GenerateSerializer, Immutable, Alias("MoeCluster.Hosting.SiloMetricTotals")]
public sealed record SiloMetricTotals(
    [property: Id(0)] string Silo,
    [property: Id(1)] long Recoveries,
    [property: Id(2)] long Migrations);

/// <summary>
/// Runs on every silo (a grain service) and answers with that silo's <see cref="LocalMetricTotals"/>,
/// so that any silo's status page can add up the whole cluster's recoveries and migrations.
/// </summary>
[Alias("MoeCluster.Hosting.IMetricTotalsService")]
public interface IMetricTotalsService : IGrainService
{
    Task<SiloMetricTotals> GetTotals();
}

public sealed class MetricTotalsService(GrainId id, Silo silo, ILoggerFactory loggers, LocalMetricTotals totals, ILocalSiloDetails local)
    : GrainService(id, silo, loggers), IMetricTotalsService
{
    public Task<SiloMetricTotals> GetTotals() =>
        Task.FromResult(new SiloMetricTotals(local.SiloAddress.ToString(), totals.Recoveries, totals.Migrations));
}

/// <summary>Reaches <see cref="IMetricTotalsService"/> on a given silo.</summary>
public interface IMetricTotalsClient : IGrainServiceClient<IMetricTotalsService>
{
    IMetricTotalsService On(SiloAddress silo);
}

public sealed class MetricTotalsClient(IServiceProvider services) : GrainServiceClient<IMetricTotalsService>(services), IMetricTotalsClient
{
    public IMetricTotalsService On(SiloAddress silo) => GetGrainService(silo);
}
