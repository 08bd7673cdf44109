namespace MoeCluster.Grains.Placement;

/// <summary>
/// What the grains need to know of the cluster's device slots: this silo's, and every live
/// silo's as advertised in its silo metadata. Implemented by Hosting over Orleans' membership.
/// </summary>
public interface IClusterSlotView
{
    SiloSlots Local { get; }

    SiloSlots[] LiveSilos();
}
