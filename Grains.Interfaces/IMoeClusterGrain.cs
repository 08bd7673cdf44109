namespace MoeCluster;

/// <summary>Cluster-wide facts for clients and tools (key 0): the device slots and their leases.</summary>
public interface IMoeClusterGrain : IGrainWithIntegerKey
{
    /// <summary>Every live silo's device slots and how many experts hold them.</summary>
    Task<SlotUsage[]> GetSlotUsage();
}
