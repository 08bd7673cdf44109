namespace MoeCluster;

/// <summary>A device of a silo and how many experts it may hold.</summary>
[GenerateSerializer, Immutable]
public sealed record DeviceSlot([property: Id(0)] string Device, [property: Id(1)] int Capacity);

/// <summary>The device slots a silo offers, as it advertises them.</summary>
[GenerateSerializer, Immutable]
public sealed record SiloSlots(
    [property: Id(0)] SiloAddress Silo,
    [property: Id(1)] DeviceSlot[] Devices,
    [property: Id(2)] bool AllowOvercommit)
{
    public int Capacity => Devices.Sum(d => d.Capacity);
}

/// <summary>How many of a silo's slots are leased.</summary>
[GenerateSerializer, Immutable]
public sealed record SlotUsage(
    [property: Id(0)] string Silo,
    [property: Id(1)] string Device,
    [property: Id(2)] int Capacity,
    [property: Id(3)] int Leased);

/// <summary>No free device slot is left for an expert. The message names the cluster's capacity.</summary>
[GenerateSerializer]
public sealed class DeviceCapacityException : InvalidOperationException
{
    public DeviceCapacityException(string message) : base(message) { }
}
