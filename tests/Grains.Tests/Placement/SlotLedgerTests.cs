using System.Net;
using MoeCluster.Grains.Placement;
using Xunit;

namespace MoeCluster.Grains.Tests.Placement;

public class SlotLedgerTests
{
    private static SiloSlots Silo(int port, params DeviceSlot[] devices) =>
        new(SiloAddress.New(new IPEndPoint(IPAddress.Loopback, port), 1), devices, AllowOvercommit: false);

    /// <summary>
    /// A slot registry that came back on another silo (its own was stopped) learns the experts
    /// already placed from Orleans' activation list, without their devices. An expert activating
    /// at that moment must still get a real device: an empty one failed its activation.
    /// </summary>
    [Fact]
    public void An_expert_the_registry_learned_without_a_device_is_given_one_when_it_claims()
    {
        var ledger = new SlotLedger();
        var silo = Silo(11111, new DeviceSlot("cuda:0", 1), new DeviceSlot("cuda:1", 4));
        ledger.Renew("expert/0+layer", silo.Silo, device: "");
        ledger.Renew("expert/1+layer", silo.Silo, device: "cuda:0");

        Assert.Equal("cuda:1", ledger.Claim("expert/0+layer", silo, [silo])); // the slot with room, as for a new lease
        Assert.Equal("cuda:1", ledger.Claim("expert/0+layer", silo, [silo])); // and kept from then on
        Assert.Null(ledger.Overcommitted);
    }

    [Fact]
    public void A_claim_on_the_leased_silo_keeps_the_leased_device()
    {
        var ledger = new SlotLedger();
        var silo = Silo(11112, new DeviceSlot("cpu", 2), new DeviceSlot("cuda:0", 2));
        ledger.Renew("expert/1+layer", silo.Silo, device: "cpu");
        Assert.Equal("cpu", ledger.Claim("expert/1+layer", silo, [silo]));
    }
}
