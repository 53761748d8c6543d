"""End to end across real interfaces: a veth in namespace A, phy:0 -> spp-nfv -> phy:1, a veth in
namespace B. spp-ctl, the primary and the nfv are real processes."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from spp.instance import tap_ifname
from spp.integrations.testbed import Testbed, wait_for
from tests.netutil import frame_seq, is_root, make_frame, veth_pair_in_netns

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root for network namespaces and veth")


# TEST-NET-2: this machine's own interface may sit in TEST-NET-1, and the root namespace would
# answer ARP for its own address on the veth ends the primary uses.
@pytest.fixture
def two_hosts():
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(veth_pair_in_netns(ns_ip="198.51.100.1/24"))
        b = stack.enter_context(veth_pair_in_netns(ns_ip="198.51.100.2/24"))
        yield a, b


@pytest.fixture
def wired(two_hosts):
    a, b = two_hosts
    with Testbed(ifaces=[a.host_if, b.host_if], nb_rings=2) as bed:
        nfv = bed.launch_nfv(1)
        nfv.patch("phy:0", "phy:1")
        nfv.patch("phy:1", "phy:0")
        nfv.forward()
        yield bed, nfv, a, b


def test_primary_reports_the_interfaces_as_phy_ports(two_hosts):
    a, b = two_hosts
    with Testbed(ifaces=[a.host_if, b.host_if], nb_rings=2) as bed:
        phys = bed.primary_status()["phy_ports"]
        assert [p["id"] for p in phys] == [0, 1]
        mac = Path(f"/sys/class/net/{a.host_if}/address").read_text().strip()
        assert phys[0]["eth"] == mac
        assert bed.nfv(1) is not None
        assert bed.launch_nfv(1).status()["ports"] == ["phy:0", "phy:1"]


def test_ping_crosses_the_patch_panel(wired):
    bed, _nfv, a, _b = wired
    r = a.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.2"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 received" in r.stdout
    phy = bed.primary_status()["phy_ports"]
    assert phy[0]["rx"] >= 3 and phy[1]["tx"] >= 3  # echo requests (and ARP) A -> B
    assert phy[1]["rx"] >= 3 and phy[0]["tx"] >= 3  # replies B -> A


def test_counted_burst_arrives_complete_in_order_byte_identical(wired):
    bed, _nfv, a, b = wired
    sizes = [60, 64, 128, 512, 1000, 1514]
    frames = [make_frame(i, sizes[i % len(sizes)]) for i in range(5000)]
    with b.capture(len(frames), timeout=30) as cap:
        a.send(frames)  # one send() per frame from Python: a modest rate
        got = cap.frames()
    phy = bed.primary_status()["phy_ports"]
    assert len(got) == len(frames), f"lost {len(frames) - len(got)} of {len(frames)}; counters {phy}"
    assert [frame_seq(f) for f in got] == list(range(len(frames)))
    assert got == frames
    assert phy[1]["tx_drop"] == 0 and phy[0]["rx_drop"] == 0


def test_repatching_phy_traffic_to_a_ring_and_back(wired):
    bed, nfv, a, b = wired
    nfv.add("ring:0")
    nfv.patch("phy:0", "ring:0")  # A's traffic now goes into ring:0 instead of to B
    frames = [make_frame(i, 100) for i in range(200)]
    a.send(frames)
    wait_for(lambda: bed.ring_stats(0)["tx"] == 200, 10, "200 frames into ring:0")
    with b.capture(200, timeout=10) as cap:
        nfv.patch("ring:0", "phy:1")  # and now out of the ring to B, in order
        got = cap.frames()
    assert got == frames
    assert bed.ring_stats(0)["rx"] == 200


def test_primary_restores_promiscuous_mode_at_exit(two_hosts):
    a, _b = two_hosts
    flags = Path(f"/sys/class/net/{a.host_if}/flags")
    assert int(flags.read_text(), 16) & 0x100 == 0
    with Testbed(ifaces=[a.host_if], nb_rings=1):
        assert int(flags.read_text(), 16) & 0x100  # SPP's phy ports are promiscuous
    assert int(flags.read_text(), 16) & 0x100 == 0


def test_vdev_and_iface_syntax_and_portmask(two_hosts):
    from spp.processes.options import OptionError
    from spp.processes.primary import collect_phys

    a, b = two_hosts
    both = collect_phys([], [f"net_af_packet0,iface={a.host_if}", f"net_af_packet1,iface={b.host_if}"], None)
    assert [p.iface for p in both] == [a.host_if, b.host_if]
    only_b = collect_phys([a.host_if], [f"net_af_packet1,iface={b.host_if}"], "0x2")
    assert [p.iface for p in only_b] == [b.host_if]
    with pytest.raises(OptionError, match="supported are net_af_packetN"):
        collect_phys([], ["net_memif0,id=0"], None)
    assert collect_phys([], ["eth_vhost0,iface=/tmp/sock0"], None) == []  # a socket, not a phy
    with pytest.raises(OptionError, match="needs iface"):
        collect_phys([], ["net_af_packet0"], None)
    with Testbed(ifaces=[a.host_if, b.host_if], nb_rings=1, extra_primary_args=["-p", "0x2"]) as bed:
        phys = bed.primary_status()["phy_ports"]
        assert [(p["id"], p["iface"]) for p in phys] == [(0, b.host_if)]


def test_nfv_tap_port_is_created_carries_traffic_and_goes_away():
    n = 70
    with Testbed(nb_rings=1) as bed:
        iface = Path(f"/sys/class/net/{tap_ifname(bed.prefix, n)}")  # the bed's prefix is its own
        assert not iface.exists()
        nfv = bed.launch_nfv(1)
        nfv.add(f"tap:{n}")
        assert iface.exists()  # created by the add
        nfv.add("nullpmd:0")
        nfv.patch("nullpmd:0", f"tap:{n}")
        nfv.forward()
        kernel_rx = iface / "statistics/rx_packets"
        wait_for(lambda: int(kernel_rx.read_text()) > 1000, 5, "frames into the kernel")
        nfv.stop()
        assert nfv.port_stats()[f"tap:{n}"]["tx"] > 1000
        nfv.delete(f"tap:{n}")
        wait_for(lambda: not iface.exists(), 5, f"{iface.name} to go away")


def test_vlan_tagged_and_untagged_frames_cross_phy_to_phy_intact(wired):
    """The kernel strips VLAN tags into metadata before a packet socket sees them; the phy port
    puts them back, also on the cut-through path an nfv uses between two phy ports."""
    _bed, _nfv, a, b = wired
    frames = [make_frame(i, 64 + i % 200, vlan=(0x8100, 100 + i % 3) if i % 2 else ()) for i in range(600)]
    with b.capture(len(frames), timeout=20) as cap:
        a.send(frames)
        got = cap.frames()
    assert got == frames
