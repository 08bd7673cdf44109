using MoeCluster.Grains.Placement;
using Orleans.Runtime.MembershipService.SiloMetadata;

namespace MoeCluster.Hosting;

/// <summary>The active silos from Orleans' membership, each with the slots its metadata advertises.</summary>
public sealed class ClusterSlotView(
    IClusterMembershipService membership,
    ISiloMetadataCache metadata,
    ILocalSiloDetails local,
    LocalDeviceSlots localSlots) : IClusterSlotView
{
    public SiloSlots Local => new(local.SiloAddress, localSlots.Slots, localSlots.AllowOvercommit);

    public SiloSlots[] LiveSilos() => membership.CurrentSnapshot.Members.Values
        .Where(m => m.Status == SiloStatus.Active)
        .Select(m => m.SiloAddress.Equals(local.SiloAddress)
            ? Local
            : SiloSlotMetadata.Decode(m.SiloAddress, metadata.GetSiloMetadata(m.SiloAddress).Metadata))
        .OrderBy(s => s.Silo.ToString(), StringComparer.Ordinal)
        .ToArray();
}

/// <summary>This silo's resolved device slots.</summary>
public sealed record LocalDeviceSlots(DeviceSlot[] Slots, bool AllowOvercommit);
