using Microsoft.Extensions.DependencyInjection;
using MoeCluster.Grains.Checkpoints;
using MoeCluster.Grains.Compute;
using MoeCluster.Grains.Experts;
using MoeCluster.Grains.Placement;
using MoeCluster.Grains.Telemetry;
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
        ICheckpointStore store = new MeteredCheckpointStore(CheckpointStoreSelection.Open(options.Store, options.ClusterId));
        var threads = options.TorchThreads > 0 ? options.TorchThreads : Environment.ProcessorCount;
        var workers = Math.Max(1, options.ExpertWorkers);
        // Process-wide: every silo in the process shares libtorch's intra-op pool.
        torch.set_num_threads(threads);
        builder.UseSiloMetadata(SiloSlotMetadata.Encode(slots, options.AllowOvercommit));
        builder.AddPlacementDirector<DeviceSlotPlacement, DeviceSlotPlacementDirector>();
        builder.AddIncomingGrainCallFilter<LayerCallMetricsFilter>();
        builder.ConfigureServices(services =>
        {
            services.AddSingleton(new LocalDeviceSlots(slots, options.AllowOvercommit));
            services.AddSingleton<IClusterSlotView, ClusterSlotView>();
            services.AddSingleton(_ => new ComputeQueues(threads, workers));
            services.AddSingleton(store);
            services.AddSingleton<LocalExperts>();
            services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>, GracefulHandoff>();
        });
        return builder;
    }
}
