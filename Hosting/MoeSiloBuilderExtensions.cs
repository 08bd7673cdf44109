using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using MoeCluster.Hosting.Checkpoints;
using MoeCluster.Grains.Checkpoints;
using MoeCluster.Grains.Compute;
using MoeCluster.Grains.Experts;
using MoeCluster.Grains.Placement;
using MoeCluster.Grains.Telemetry;
using Orleans.Configuration;
using Orleans.Runtime.MembershipService.SiloMetadata;
using TorchSharp;

namespace MoeCluster.Hosting;

public static class MoeSiloBuilderExtensions
{
    /// <summary>
    /// Makes this silo a MoeCluster silo: advertises its device slots in silo metadata, places
    /// experts by free slots, and gives grains per-device compute queues. Clustering and ports are
    /// the caller's (see <see cref="MoeSiloHost"/>).
    /// </summary>
    public static ISiloBuilder AddMoeCluster(this ISiloBuilder builder, MoeSiloOptions options)
    {
        var slots = DeviceInventory.Resolve(options.Devices, options.ExpertsPerDevice);
        var opened = CheckpointStoreSelection.Open(options.Store, options.ClusterId);
        ICheckpointStore store = new MeteredCheckpointStore(opened);
        var threads = options.TorchThreads > 0 ? options.TorchThreads : Environment.ProcessorCount;
        var workers = Math.Max(1, options.ExpertWorkers);
        // Process-wide: every silo in the process shares libtorch's intra-op pool.
        torch.set_num_threads(threads);
        // Orleans' strongly consistent directory: while a silo leaves gracefully, the default one can
        // let a call activate a second router of a layer elsewhere, whose missing state costs a replay.
#pragma warning disable ORLEANSEXP003 // experimental in Orleans 10
        builder.AddDistributedGrainDirectory();
#pragma warning restore ORLEANSEXP003
        // Its range lease holds a crashed silo's grains unregistrable for 30 s minus failure
        // detection (16 s from kill to the next step here, against the 10 s goal). It guards
        // against a silo declared dead that still runs; the layer does not need it: every expert
        // call names the expert's incarnation and every step the router's epoch, so state left on
        // such a silo is refused, never mixed.
        builder.Configure<GrainDirectoryOptions>(o => o.RangeLeaseDuration = TimeSpan.Zero);
        builder.UseSiloMetadata(SiloSlotMetadata.Encode(slots, options.AllowOvercommit));
        builder.AddPlacementDirector<DeviceSlotPlacement, DeviceSlotPlacementDirector>();
        builder.AddIncomingGrainCallFilter<LayerCallMetricsFilter>();
        builder.ConfigureServices(services =>
        {
            services.AddSingleton(new LocalDeviceSlots(slots, options.AllowOvercommit));
            services.AddSingleton<IClusterSlotView, ClusterSlotView>();
            services.AddSingleton(_ => new ComputeQueues(threads, workers));
            services.AddSingleton<ICheckpointStore>(provider =>
            {
                // Opened before the silo's services exist (a silo whose store is unreachable does not start); it logs from here on.
                if (opened is RedisCheckpointStore redis) redis.Logger = provider.GetRequiredService<ILogger<RedisCheckpointStore>>();
                return store;
            });
            services.AddSingleton<LocalExperts>();
            services.AddSingleton<ManagedMemoryTrim>();
            services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>, GracefulHandoff>();
        });
        return builder;
    }
}
