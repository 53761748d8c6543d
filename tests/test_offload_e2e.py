"""Real TCP and UDP through the panel with the kernel's default offloads left on in the namespaces.

Two namespaces A and B, each behind a veth whose root-namespace end is a phy port; real spp-ctl,
primary and secondaries in between. With TSO/GSO and checksum offload on, the kernel hands the
panel 64 KB aggregates and frames with partial checksums: these tests prove they arrive intact
(sha256 of 100 MB each way), on every path the task names.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spp.integrations.testbed import Testbed, wait_for
from tests.netutil import VethNs, is_root, veth_pair_in_netns
from tests.traffic import StreamSniffer, ping, tcp_transfer, udp_datagrams, udp_gso_datagrams

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root for network namespaces and veth")

MB = 1 << 20
A_IP, B_IP = "198.51.100.1", "198.51.100.2"


@contextlib.contextmanager
def hosts(count: int = 2, mtu: int | None = None) -> Iterator[list[VethNs]]:
    """``count`` namespaces on 198.51.100.0/24 (hosts .1, .2, ...), offloads left on."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(veth_pair_in_netns(ns_ip=f"198.51.100.{i + 1}/24", mtu=mtu, offloads=True))
            for i in range(count)
        ]


def assert_transfer(sender: VethNs, receiver: VethNs, ip: str, nbytes: int = 100 * MB) -> None:
    r = tcp_transfer(sender.ns, receiver.ns, ip, nbytes)
    assert r.received["bytes"] == nbytes, r
    assert r.received["sha256"] == r.sent["sha256"], r
    assert r.sent["ack"] == "ok"


def both_ways(a: VethNs, b: VethNs, nbytes: int = 100 * MB) -> None:
    assert_transfer(a, b, B_IP, nbytes)
    assert_transfer(b, a, A_IP, nbytes)


def patched_nfv(bed: Testbed, client_id: int = 1) -> None:
    nfv = bed.launch_nfv(client_id)
    nfv.patch("phy:0", "phy:1")
    nfv.patch("phy:1", "phy:0")
    nfv.forward()


@pytest.fixture
def nfv_bed() -> Iterator[tuple[Testbed, VethNs, VethNs]]:
    with hosts() as (a, b), Testbed(ifaces=[a.host_if, b.host_if], nb_rings=2) as bed:
        patched_nfv(bed)
        yield bed, a, b


def test_tcp_100mb_each_way_through_nfv_phy_to_phy(nfv_bed):
    bed, a, b = nfv_bed
    both_ways(a, b)
    stats = {s["port"]: s for s in bed.nfv(1).status()["stats"]}
    # The namespaces really did hand us aggregates: they went through without being cut up.
    assert stats["phy:0"]["rx"] < 100 * MB // 1500


def test_udp_datagrams_all_delivered_through_nfv(nfv_bed):
    bed, a, b = nfv_bed
    r = udp_datagrams(a.ns, b.ns, B_IP, 1000)
    assert r == {"received": 1000, "bad": 0}
    r = udp_datagrams(b.ns, a.ns, A_IP, 1000)
    assert r == {"received": 1000, "bad": 0}
    # UDP segmentation offload (UDP_SEGMENT): aggregates of 45 datagrams cross whole.
    before = {s["port"]: s["rx"] for s in bed.nfv(1).status()["stats"]}["phy:0"]
    count, r = udp_gso_datagrams(a.ns, b.ns, B_IP)
    assert r == {"received": count, "bad": 0}
    after = {s["port"]: s["rx"] for s in bed.nfv(1).status()["stats"]}["phy:0"]
    assert after - before < count // 2, "the datagrams came as aggregates"


def test_jumbo_ping_across_an_mtu_9000_path():
    with hosts(mtu=9000) as (a, b), Testbed(ifaces=[a.host_if, b.host_if], nb_rings=2) as bed:
        patched_nfv(bed)
        r = ping(a.ns, B_IP, size=8972)
        assert r.returncode == 0 and "3 received" in r.stdout, r.stdout + r.stderr
        assert_transfer(a, b, B_IP, 20 * MB)


def test_tcp_across_two_nfv_through_a_ring():
    with hosts() as (a, b), Testbed(ifaces=[a.host_if, b.host_if], nb_rings=2) as bed:
        # phy:0 -> ring:0 -> phy:1 and back through ring:1, each direction split over two processes.
        one = bed.launch_nfv(1, lcores="0,1")
        two = bed.launch_nfv(2, lcores="1,0")
        for nfv in (one, two):
            nfv.add("ring:0")
            nfv.add("ring:1")
        one.patch("phy:0", "ring:0")
        two.patch("ring:0", "phy:1")
        two.patch("phy:1", "ring:1")
        one.patch("ring:1", "phy:0")
        one.forward()
        two.forward()
        both_ways(a, b)


# -- spp_vf and spp_mirror ---------------------------------------------------------------------------


def test_tcp_through_vf_forward_components():
    with hosts() as (a, b), Testbed(ifaces=[a.host_if, b.host_if], nb_rings=1) as bed:
        vf = bed.launch_vf(1, lcores="0,1")
        vf.start("fwd1", 1, "forward")
        vf.start("fwd2", 1, "forward")
        vf.attach("phy:0", "rx", "fwd1")
        vf.attach("phy:1", "tx", "fwd1")
        vf.attach("phy:1", "rx", "fwd2")
        vf.attach("phy:0", "tx", "fwd2")
        both_ways(a, b)


def mac_of(v: VethNs) -> str:
    return v.run(["cat", f"/sys/class/net/{v.ns_if}/address"]).stdout.strip()


def test_tcp_through_the_vf_classifier_with_a_vlan_tag_pushed_and_stripped():
    """A -> classifier (by B's MAC) -> a ring with a tag pushed -> forward that strips it -> B."""
    with hosts() as (a, b), Testbed(ifaces=[a.host_if, b.host_if], nb_rings=1) as bed:
        vf = bed.launch_vf(1, lcores="0,1")
        vf.start("cls", 1, "classifier")
        vf.start("untag", 1, "forward")
        vf.start("back", 1, "forward")
        vf.attach("phy:0", "rx", "cls")
        vf.attach("ring:0", "tx", "cls", {"operation": "add", "id": 100, "pcp": 0})
        vf.attach("ring:0", "rx", "untag", {"operation": "del"})
        vf.attach("phy:1", "tx", "untag")
        vf.attach("phy:1", "rx", "back")
        vf.attach("phy:0", "tx", "back")
        vf.table_add(mac_of(b), "ring:0")  # (broadcast ARP goes to every port of the table)
        both_ways(a, b)
        assert vf.component("cls")["counters"]["tx"] > 0


def test_tcp_through_mirror_with_both_copies_intact():
    """phy:0 -> mirror -> phy:1 (to B) and a deep copy -> phy:2 (to C, where a passive listener
    rebuilds A's stream from the copies and hashes it)."""
    with hosts(3) as (a, b, c), Testbed(ifaces=[a.host_if, b.host_if, c.host_if], nb_rings=1) as bed:
        mirror = bed.launch_mirror(1, lcores="0,1")
        mirror.start("mir", 1, "mirror")
        mirror.attach("phy:0", "rx", "mir")
        mirror.attach("phy:1", "tx", "mir")
        mirror.attach("phy:2", "tx", "mir")
        nfv = bed.launch_nfv(2, lcores="1,0")
        nfv.patch("phy:1", "phy:0")
        nfv.forward()
        nbytes = 20 * MB
        sniffer = StreamSniffer(c.ns, c.ns_if, A_IP, B_IP, nbytes)
        r = tcp_transfer(a.ns, b.ns, B_IP, nbytes)
        assert r.received == {"bytes": nbytes, "sha256": r.sent["sha256"]}
        copy = sniffer.result()
        assert copy.pop("sniffer_drops") == 0, f"the listener itself lost frames: {copy}"
        seen = {"mirror": mirror.component("mir"), "phys": [bed.phy_stats(n) for n in range(3)]}
        assert copy == {"bytes": nbytes, "sha256": r.sent["sha256"]}, seen


# -- TAP -----------------------------------------------------------------------------------------


def tun_devices() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir() if (p / "tun_flags").exists()}


def test_tcp_between_a_phy_and_a_tap_in_another_namespace():
    """A's veth is phy:0; B's interface is the nfv's TAP device itself, moved into B."""
    with hosts(1) as (a,), Testbed(ifaces=[a.host_if], nb_rings=1) as bed:
        b_ns = f"{a.ns}b"
        subprocess.run(["ip", "netns", "add", b_ns], check=True)
        try:
            nfv = bed.launch_nfv(1)
            n = 50 + os.getpid() % 20
            before = tun_devices()
            nfv.add(f"tap:{n}")
            (tap,) = tun_devices() - before
            subprocess.run(["ip", "link", "set", "dev", tap, "netns", b_ns], check=True)
            for argv in (
                ["sysctl", "-q", "-w", f"net.ipv6.conf.{tap}.disable_ipv6=1"],
                ["ip", "addr", "add", f"{B_IP}/24", "dev", tap],
                ["ip", "link", "set", "dev", tap, "up"],
                ["ip", "link", "set", "dev", "lo", "up"],
            ):
                subprocess.run(["ip", "netns", "exec", b_ns, *argv], check=True)
            nfv.patch("phy:0", f"tap:{n}")
            nfv.patch(f"tap:{n}", "phy:0")
            nfv.forward()
            b = VethNs(b_ns, "", tap)
            both_ways(a, b)
            stats = {s["port"]: s for s in nfv.status()["stats"]}
            # The TAP handed over aggregates and took them: far fewer frames than MSS-sized ones.
            assert stats[f"tap:{n}"]["rx"] < 100 * MB // 1500
        finally:
            subprocess.run(["ip", "netns", "del", b_ns], check=False)


# -- captures: what tcpdump would have seen on a wire ---------------------------------------------


def tcp_checksum_report(path: Path) -> dict[str, int]:
    """tshark's verdict on every TCP frame of ``path``: counts of good and bad IP and TCP
    checksums, and the longest frame."""
    r = subprocess.run(
        [
            "tshark", "-r", str(path), "-n",
            "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
            "-Y", "tcp", "-T", "fields", "-e", "frame.len", "-e", "ip.checksum.status",
            "-e", "tcp.checksum.status", "-e", "frame.number", "-e", "tcp.checksum",
        ],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    out: dict[str, object] = {"frames": 0, "ip_good": 0, "tcp_good": 0, "longest": 0, "bad": []}
    for line in r.stdout.splitlines():
        length, ip_ok, tcp_ok, number, field = line.split("\t")
        if ip_ok != "1" or tcp_ok != "1":
            out["bad"].append((number, length, ip_ok, tcp_ok, field))  # type: ignore[union-attr]
        out["frames"] += 1
        out["ip_good"] += ip_ok == "1"
        out["tcp_good"] += tcp_ok == "1"
        out["longest"] = max(out["longest"], int(length))
    return out


def wait_stable(value: Callable[[], object], quiet: float = 0.5, timeout: float = 20) -> None:
    """Wait until ``value()`` has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise AssertionError(f"still changing after {timeout} s: {last}")


def assert_wire_like(path: Path, context: object = None) -> None:
    rep = tcp_checksum_report(path)
    assert rep["frames"] > 1000, (rep, context)
    assert rep["ip_good"] == rep["tcp_good"] == rep["frames"], rep  # every checksum valid
    assert rep["longest"] <= 1514, rep  # segmented to wire size


def test_spp_pcap_capture_of_offloaded_tcp_has_valid_checksums_and_wire_sizes(tmp_path):
    from spp.integrations.testbed import start_pcap
    from tests.pcaputil import lz4_py_decompress

    with hosts() as (a, b), Testbed(ifaces=[a.host_if, b.host_if], nb_rings=1) as bed:
        patched_nfv(bed)
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        pcap = start_pcap(bed, 3, "phy:0", out_dir, lcores="0,1")
        pcap.start()
        assert_transfer(a, b, B_IP, 5 * MB)
        wait_stable(lambda: pcap.status()["core"][1]["written"])
        pcap.stop()
        st = pcap.status()
        pcap.exit()
    (path,) = sorted(out_dir.iterdir())
    plain = tmp_path / "cap.pcap"
    plain.write_bytes(lz4_py_decompress(path))
    assert_wire_like(plain)
    writer = st["core"][1]
    assert writer["xstats"]["sw_gso"] > 0 and writer["xstats"]["sw_segments"] > writer["xstats"]["sw_gso"]


def test_pcap_port_records_offloaded_tcp_as_on_the_wire():
    n = 40 + os.getpid() % 20
    path = Path(f"/tmp/spp-tx{n}.pcap")
    try:
        with hosts() as (a, b), Testbed(ifaces=[a.host_if, b.host_if], nb_rings=1) as bed:
            patched_nfv(bed)
            rec = bed.launch_nfv(2, lcores="1,0")  # a second reader of phy:0 (its own socket)
            rec.add(f"pcap:{n}")
            rec.patch("phy:0", f"pcap:{n}")
            rec.forward()
            assert_transfer(a, b, B_IP, 5 * MB)
            # The recorder shares a CPU with the endpoints and may lag: let it catch up.
            wait_stable(lambda: {s["port"]: s["tx"] for s in rec.status()["stats"]}[f"pcap:{n}"])
            rec.stop()
            stats = {s["port"]: s for s in rec.status()["stats"]}
            rec.delete(f"pcap:{n}")
        assert_wire_like(path, stats)
        assert stats[f"pcap:{n}"]["xstats"]["sw_gso"] > 0
    finally:
        path.unlink(missing_ok=True)
        Path(f"/tmp/spp-rx{n}.pcap").unlink(missing_ok=True)


# -- bad input: counted, the worker alive, other traffic flowing ----------------------------------


def test_one_oversize_frame_costs_only_itself_on_the_cut_through_path():
    """A's link takes jumbo frames, B's does not: the frame B's link refuses is counted, the 40
    behind it in the same receive block arrive."""
    from tests.netutil import make_frame

    with contextlib.ExitStack() as stack:
        a = stack.enter_context(veth_pair_in_netns(mtu=9000))
        b = stack.enter_context(veth_pair_in_netns())
        bed = stack.enter_context(Testbed(ifaces=[a.host_if, b.host_if], nb_rings=1))
        nfv = bed.launch_nfv(1)
        nfv.patch("phy:0", "phy:1")
        nfv.forward()
        frames = [make_frame(0, 4000)] + [make_frame(i, 200) for i in range(1, 41)]
        with b.capture(40, timeout=5) as cap:
            a.send(frames)
            got = cap.frames()
        assert got == frames[1:]
        wait_for(lambda: bed.primary_status()["phy_ports"][1]["tx_drop"] == 1, 5, "the refusal counted")
        stats = {s["port"]: s for s in nfv.status()["stats"]}
        assert stats["phy:1"]["xstats"] == {"tx_refused": 1}


def test_runts_oversize_frames_and_bad_vnet_headers_from_a_ring_are_counted_and_traffic_flows():
    """Another process (this test) puts good frames, runts, frames longer than the MTU and frames
    with nonsense offload metadata on ring:0; an nfv sends ring:0 to phy:1. The bad ones are
    counted by reason, the good ones arrive, and afterwards real TCP still crosses."""
    import struct

    import numpy as np

    from spp.engine.offload import GSO_TCPV4, NEEDS_CSUM
    from spp.engine.pool import BufferPool
    from spp.engine.ring import Ring
    from spp.engine.shm import Segment
    from tests.netutil import make_frame

    with hosts() as (a, b), Testbed(ifaces=[a.host_if, b.host_if], nb_rings=1) as bed:
        nfv = bed.launch_nfv(1)
        patched = bed.launch_nfv(2, lcores="1,0")
        nfv.add("ring:0")
        nfv.patch("ring:0", "phy:1")
        nfv.forward()
        good = [make_frame(i, 100 + i) for i in range(20)]
        bad_vnet = [
            struct.pack("<BBHHHH", NEEDS_CSUM, 0, 0, 0, 90, 16),  # csum_start beyond the frame
            struct.pack("<BBHHHH", 0, 0x33, 0, 0, 0, 0),  # no such gso type
            struct.pack("<BBHHHH", NEEDS_CSUM, GSO_TCPV4, 54, 0, 34, 16),  # gso_size 0
            struct.pack("<BBHHHH", 0, GSO_TCPV4, 5000, 1448, 0, 0),  # header longer than the frame
        ]
        seg = Segment.attach(bed.prefix)
        pool = BufferPool(seg)
        try:
            frames = [*good[:5], b"\x02" * 10, make_frame(99, 3000), *good[5:]]
            frames[8:8] = [make_frame(100 + i, 80) for i in range(len(bad_vnet))]
            bufs = pool.alloc_frames(frames)
            for k, hdr in enumerate(bad_vnet):
                pool.vnet[bufs[8 + k]] = np.frombuffer(hdr, np.uint8)
            with b.capture(len(good), timeout=5) as cap:
                assert Ring(seg, 0).enqueue(bufs) == len(bufs)
                got = cap.frames()
            assert got == good
            stats = {s["port"]: s for s in nfv.status()["stats"]}
            assert stats["phy:1"]["xstats"] == {"tx_refused": 2, "tx_bad_vnet": 4}
            assert stats["phy:1"]["tx_drop"] == 6
        finally:
            pool.close()
            seg.close()
        # The worker is alive and real traffic still flows.
        patched.patch("phy:0", "phy:1")
        patched.patch("phy:1", "phy:0")
        nfv.delete("ring:0")
        patched.forward()
        assert_transfer(a, b, B_IP, 10 * MB)
        assert nfv.status()["status"] == "running"
