"""spp_vf across real interfaces: three veth pairs into three namespaces (A, B, C). A classifier
reads phy:0 (from A) and steers to phy:1 (to B, pushing a tag) and phy:2 (to C, stripping one);
a merge on another lcore brings B's and C's traffic back out of phy:0 to A — phy:0 has one rx
user and one tx user, on two lanes, as in SPP's recipes."""

from __future__ import annotations

import contextlib

import pytest

from spp.integrations.testbed import Testbed, wait_for
from tests.netutil import is_root, make_frame, veth_pair_in_netns

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root for network namespaces and veth")

MAC_B, MAC_C = bytes.fromhex("525400000b0b"), bytes.fromhex("525400000c0c")
BCAST = b"\xff" * 6


def tagged(frame: bytes, vid: int, pcp: int = 0) -> bytes:
    return frame[:12] + bytes.fromhex("8100") + ((pcp << 13) | vid).to_bytes(2, "big") + frame[12:]


@pytest.fixture
def hosts():
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(veth_pair_in_netns()) for _ in range(3)]


def test_classifier_and_merge_between_three_hosts(hosts):
    a, b, c = hosts
    with Testbed(ifaces=[a.host_if, b.host_if, c.host_if], nb_rings=2) as bed:
        vf = bed.launch_vf(1, lcores="0-2")
        vf.start("cls", 1, "classifier")
        vf.start("mgr", 2, "merge")
        vf.attach("phy:0", "rx", "cls")
        vf.attach("phy:1", "tx", "cls", {"operation": "add", "id": 100, "pcp": 5})
        vf.attach("phy:2", "tx", "cls", {"operation": "del"})
        vf.attach("phy:1", "rx", "mgr")
        vf.attach("phy:2", "rx", "mgr")
        vf.attach("phy:0", "tx", "mgr")
        vf.table_add("52:54:00:00:0b:0b", "phy:1")
        vf.table_add("52:54:00:00:0c:0c", "phy:2", vlan=300)
        assert vf.status()["ports"] == ["phy:0", "phy:1", "phy:2"]

        to_b = [make_frame(i, (64, 200, 1000)[i % 3], dst=MAC_B) for i in range(30)]
        to_c = [make_frame(100 + i, (64, 1514)[i % 2], dst=MAC_C, vlan=(0x8100, 300)) for i in range(30)]
        bcast = make_frame(200, 60, dst=BCAST)  # untagged: every port of the untagged table
        bcast_c = make_frame(201, 60, dst=BCAST, vlan=(0x8100, 300))  # VLAN 300's ports
        stray = make_frame(202, 64, dst=bytes.fromhex("020000000077"))  # no default: dropped
        frames = [*to_b, *to_c, bcast, bcast_c, stray]
        with b.capture(31, timeout=10) as cap_b, c.capture(31, timeout=10) as cap_c:
            a.send(frames)
            got_b, got_c = cap_b.frames(), cap_c.frames()
        assert got_b == [tagged(f, 100, 5) for f in [*to_b, bcast]]
        assert got_c == [f[:12] + f[16:] for f in [*to_c, bcast_c]]
        wait_for(lambda: vf.component("cls")["counters"]["drop"] == 1, 5, "the stray frame to be counted")
        assert vf.component("cls")["counters"] == {"rx": 63, "tx": 62, "tx_drop": 0, "drop": 1}
        phys = bed.primary_status()["phy_ports"]
        assert phys[0]["rx"] == 63 and phys[1]["tx"] == 31 and phys[2]["tx"] == 31

        # The way back: B and C -> merge -> phy:0 -> A, frames unchanged.
        from_b = [make_frame(300 + i, 100, dst=bytes.fromhex("02aa550000aa")) for i in range(20)]
        from_c = [make_frame(400 + i, 90, vlan=(0x8100, 42)) for i in range(20)]
        with a.capture(40, timeout=10) as cap_a:
            b.send(from_b)
            c.send(from_c)
            got_a = cap_a.frames()
        assert got_a == from_b + from_c
        assert vf.component("mgr")["counters"] == {"rx": 40, "tx": 40, "tx_drop": 0, "drop": 0}
