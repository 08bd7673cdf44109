using System.Globalization;

namespace MoeCluster.Hosting;

/// <summary>
/// A silo's device slots as silo metadata (fixed for the silo's life), so that every silo can
/// read every other's: <c>moe.devices = cpu*4</c> or <c>cuda:0*1,cuda:1*1</c>.
/// </summary>
public static class SiloSlotMetadata
{
    public const string DevicesKey = "moe.devices";
    public const string OvercommitKey = "moe.overcommit";

    public static Dictionary<string, string> Encode(IEnumerable<DeviceSlot> slots, bool allowOvercommit) => new()
    {
        [DevicesKey] = string.Join(",", slots.Select(s => $"{s.Device}*{s.Capacity.ToString(CultureInfo.InvariantCulture)}")),
        [OvercommitKey] = allowOvercommit ? "true" : "false",
    };

    /// <summary>The slots of <paramref name="silo"/>; none when its metadata has not arrived (or it is not a MoeCluster silo).</summary>
    public static SiloSlots Decode(SiloAddress silo, IReadOnlyDictionary<string, string> metadata)
    {
        if (!metadata.TryGetValue(DevicesKey, out var devices) || devices.Length == 0)
            return new SiloSlots(silo, [], false);
        var slots = devices.Split(',').Select(entry =>
        {
            var star = entry.LastIndexOf('*');
            return new DeviceSlot(entry[..star], int.Parse(entry[(star + 1)..], CultureInfo.InvariantCulture));
        }).ToArray();
        return new SiloSlots(silo, slots, metadata.TryGetValue(OvercommitKey, out var o) && o == "true");
    }
}
