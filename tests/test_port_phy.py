"""``phy:N`` over AF_PACKET, against a real veth pair whose far end lives in a network namespace.

The namespace side plays the wire: frames injected there must come out of ``rx_burst`` byte for
byte and in order, and what ``tx_burst`` sends must arrive there unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import json
import random
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from spp.engine import linux
from spp.engine.offload import XS
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId
from spp.engine.ports import open_port
from spp.engine.ports import phy as phy_module
from spp.engine.ports.base import RX, RX_BYTES, RX_DROP, TX, TX_BYTES, TX_DROP, PortContext, PortError
from spp.engine.ports.phy import IDLE, PhyPort
from spp.engine.shm import PhyInfo
from tests.netutil import (
    TEST_SRC,
    SendInBackground,
    VethNs,
    frame_seq,
    host_send,
    is_root,
    make_frame,
    packet_sockets_on,
    veth_pair_in_netns,
    wait_until,
)

needs_root = pytest.mark.skipif(not is_root(), reason="needs root: creates network namespaces and veth pairs")

PHY0 = PortId("phy", 0)


@pytest.fixture
def veth() -> Iterator[VethNs]:
    if not is_root():
        pytest.skip("needs root: creates network namespaces and veth pairs")
    with veth_pair_in_netns() as v:
        yield v


@pytest.fixture
def make_phy(make_segment, veth: VethNs) -> Iterator[Callable[..., tuple[PhyPort, BufferPool]]]:
    """Factory: ``make_phy(nb_bufs=..., block_size=...)`` -> (port on the veth, its pool)."""
    made: list[tuple[PhyPort, BufferPool]] = []

    def make(nb_bufs: int = 8192, **port_kw: int) -> tuple[PhyPort, BufferPool]:
        seg = make_segment(
            nb_bufs=nb_bufs, phys=[PhyInfo(iface=veth.host_if, mac=linux.get_mac(veth.host_if))]
        )
        pool = BufferPool(seg)
        port = PhyPort(PHY0, PortContext(seg=seg, pool=pool, client_id=1), **port_kw)
        made.append((port, pool))
        return port, pool

    yield make
    for port, pool in made:
        port.close()
        pool.close()


@contextlib.contextmanager
def phy_pair(
    make_segment: Callable[..., object], mtu: tuple[int | None, int | None] = (None, None), **seg_kw: int
) -> Iterator[tuple[VethNs, VethNs, PhyPort, PhyPort, BufferPool]]:
    """phy:0 and phy:1 of one process on two veth pairs (``mtu`` for each), their far ends in
    namespaces; closed afterwards, and then every buffer must be back in the pool."""
    with veth_pair_in_netns(mtu=mtu[0]) as a, veth_pair_in_netns(mtu=mtu[1]) as b:
        seg = make_segment(phys=[PhyInfo(iface=a.host_if), PhyInfo(iface=b.host_if)], **seg_kw)
        pool = BufferPool(seg)
        ctx = PortContext(seg=seg, pool=pool, client_id=1)
        p0, p1 = PhyPort(PortId("phy", 0), ctx), PhyPort(PortId("phy", 1), ctx)
        try:
            yield a, b, p0, p1, pool
        finally:
            p0.close()
            p1.close()
        assert all_free(pool)
        pool.close()


def receive(
    port: PhyPort, pool: BufferPool, count: int, bursts: tuple[int, ...] = (32,), timeout: float = 5.0
) -> tuple[list[bytes], list[int], list[int]]:
    """Read test frames until ``count`` came or ``timeout``: (frames, burst sizes, stamps)."""
    frames: list[bytes] = []
    sizes: list[int] = []
    stamps: list[int] = []
    fd = port.fileno()
    deadline = time.monotonic() + timeout
    i = 0
    while len(frames) < count and time.monotonic() < deadline:
        bufs = port.rx_burst(bursts[i % len(bursts)])
        i += 1
        if not len(bufs):
            select.select([fd], [], [], 0.05)
            continue
        sizes.append(len(bufs))
        for b in bufs.tolist():
            f = pool.read(b)
            if f[6:12] == TEST_SRC:
                frames.append(f)
                stamps.append(int(pool.stamps[b]))
        pool.free(bufs)
    return frames, sizes, stamps


def promiscuity(iface: str) -> int:
    """The kernel's promiscuity count, which includes socket memberships (IFF_PROMISC does not)."""
    out = subprocess.run(["ip", "-d", "-j", "link", "show", "dev", iface], capture_output=True, check=True)
    return int(json.loads(out.stdout)[0]["promiscuity"])


def all_free(pool: BufferPool) -> bool:
    """Every buffer is back in the pool (an open port keeps none: both its sockets receive into
    rings, and frames are copied into buffers only when taken)."""
    pool.flush()
    return pool.shared_free == pool.seg.spec.nb_bufs


def assert_all_back(pool: BufferPool) -> None:
    """Every small and large buffer is back (the port is closed), then the handle goes."""
    assert all_free(pool)
    assert pool.large_free == pool.seg.spec.nb_large
    pool.close()


def mixed_frames(n: int, seed: int, start: int = 0) -> list[bytes]:
    """Runs of one size (the fast path), random sizes (the walk's slow path), and extremes."""
    rnd = random.Random(seed)
    frames = []
    for i in range(start, start + n):
        phase = (i // 100) % 4
        if phase == 0:
            size = 60
        elif phase == 1:
            size = rnd.randint(60, 1514)
        elif phase == 2:
            size = 1514
        else:
            size = (64, 1000)[i % 2]
        frames.append(make_frame(i, size))
    return frames


# -- opening -------------------------------------------------------------------------------------


def test_bad_phy_index_is_refused(make_segment) -> None:
    seg = make_segment(phys=[PhyInfo(iface="lo")])
    pool = BufferPool(seg)
    try:
        ctx = PortContext(seg=seg, pool=pool, client_id=1)
        with pytest.raises(PortError, match=r"phy:1 does not exist: the primary has phy:0..phy:0"):
            PhyPort(PortId("phy", 1), ctx)
        with pytest.raises(PortError, match=r"phy:3 does not exist"):
            open_port(PortId("phy", 3), ctx)
    finally:
        pool.close()


def test_no_phys_and_missing_interface_are_refused(make_segment) -> None:
    seg = make_segment()
    seg2 = make_segment(phys=[PhyInfo(iface="sppnosuchif0")])
    pool, pool2 = BufferPool(seg), BufferPool(seg2)
    try:
        with pytest.raises(PortError, match=r"phy:0 does not exist: the primary has no phy ports"):
            PhyPort(PHY0, PortContext(seg=seg, pool=pool))
        with pytest.raises(PortError, match=r"sppnosuchif0"):
            PhyPort(PHY0, PortContext(seg=seg2, pool=pool2))
    finally:
        pool.close()
        pool2.close()


# -- receive -------------------------------------------------------------------------------------


@needs_root
def test_rx_mixed_sizes_byte_identical_in_order(veth: VethNs, make_phy) -> None:
    port, pool = make_phy()
    port.fileno()  # the ring must exist before the first frame
    frames = mixed_frames(1200, seed=1)
    t0 = time.time_ns()
    sender = SendInBackground(veth, frames)
    got, sizes, stamps = receive(port, pool, len(frames), bursts=(7, 32, 1000, 1, 256))
    sender.join()
    t1 = time.time_ns()
    assert len(got) == len(frames), f"received {len(got)} of {len(frames)}, rx_drop={port.counters[RX_DROP]}"
    assert [frame_seq(f) for f in got] == list(range(len(frames)))
    assert got == frames
    assert all(t0 - 10**9 <= s <= t1 for s in stamps), "stamps are ns since the epoch, taken on arrival"
    assert int(port.counters[RX_DROP]) == 0
    assert max(sizes) <= 1000
    assert all_free(pool)


@needs_root
def test_rx_bursts_larger_and_smaller_than_a_block(veth: VethNs, make_phy) -> None:
    # A long retire timeout lets the kernel fill blocks completely before it hands them over.
    port, pool = make_phy(block_size=64 * 1024, block_nr=16, retire_ms=40)
    port.fileno()
    frames = mixed_frames(300, seed=2, start=100)  # random sizes, then 1514 B: several full blocks
    veth.send(frames)
    time.sleep(0.15)  # past the retire timeout: every block is ours now
    got, sizes, _ = receive(port, pool, len(frames), bursts=(5000,))
    assert got == frames
    assert sizes[0] == len(frames), "one burst spans every block"
    assert len(frames) > 64 * 1024 // 1600, "the burst is larger than one block can hold"

    # And a block handed out a few frames at a time: the cursor keeps its place.
    more = [make_frame(1000 + i, 60 + i) for i in range(100)]
    veth.send(more)
    time.sleep(0.15)
    got, sizes, _ = receive(port, pool, len(more), bursts=(3,))
    assert got == more
    assert max(sizes) == 3
    assert all_free(pool)


IMIX = (64, 594, 1514, 64, 64, 594, 64)


@needs_root
def test_rx_sizes_changing_every_frame(veth: VethNs, make_phy) -> None:
    # Runs too short for the stride guess: the block's frames are found by the header scan.
    port, pool = make_phy(block_size=64 * 1024, block_nr=64, retire_ms=40)
    port.fileno()
    frames = [make_frame(i, IMIX[i % len(IMIX)]) for i in range(700)]
    veth.send(frames)
    time.sleep(0.1)
    got, _, _ = receive(port, pool, len(frames), bursts=(32, 500))
    assert got == frames
    assert port.blocks_scanned >= 1


def forged(seq: int, mac: int) -> bytes:
    """A frame whose payload holds a valid-looking ring header at an 8-byte-aligned ring slot.

    Frame byte k lies at header + tp_mac (82 for Ethernet on TPACKET_V3, 92 with a
    virtio_net_hdr in front) + k, so bytes from the first k that puts them on a multiple of 8
    sit on a slot: tp_next_offset align8(100 + tp_mac), tp_snaplen 100, tp_mac.
    """
    f = bytearray(make_frame(seq, 200))
    k = 16 + (-(mac + 16)) % 8
    f[k : k + 4] = ((100 + mac + 7) & ~7).to_bytes(4, "little")
    f[k + 12 : k + 16] = (100).to_bytes(4, "little")
    f[k + 24 : k + 26] = mac.to_bytes(2, "little")
    return bytes(f)


@needs_root
def test_rx_payload_that_mimics_ring_headers(veth: VethNs, make_phy) -> None:
    port, pool = make_phy(block_size=64 * 1024, block_nr=64, retire_ms=40)
    port.fileno()
    mac = 92 if port.rx_vnet else 82
    frames = [forged(i, mac) if i % 10 == 3 else make_frame(i, IMIX[i % len(IMIX)]) for i in range(500)]
    veth.send(frames)
    time.sleep(0.1)
    got, _, _ = receive(port, pool, len(frames), bursts=(64,))
    assert got == frames
    assert port.scan_fallbacks >= 1, "the forged headers were seen, and not believed"


@needs_root
def test_rx_minimum_size_run_in_bursts_of_32(veth: VethNs, make_phy) -> None:
    port, pool = make_phy()
    port.fileno()
    frames = [make_frame(i, 60) for i in range(3000)]
    sender = SendInBackground(veth, frames)
    got, _, _ = receive(port, pool, len(frames))
    sender.join()
    assert got == frames


@needs_root
def test_rx_vlan_tag_is_kept(veth: VethNs, make_phy) -> None:
    # The kernel moves the outer tag into metadata before any packet socket sees the frame; the
    # port must put it back, since VLAN classification downstream reads it from the bytes.
    port, pool = make_phy()
    port.fileno()
    frames = [
        make_frame(0, 60),
        make_frame(1, 100, vlan=(0x8100, 100)),
        make_frame(2, 64, vlan=(0x8100, 0xA000)),  # priority tag: VID 0, PCP 5
        make_frame(3, 200, vlan=(0x88A8, 300, 0x8100, 7)),  # QinQ: only the outer tag is stripped
        make_frame(4, 1518, vlan=(0x8100, 4094)),  # the longest tagged frame a 1500 MTU carries
        make_frame(5, 1514),
        make_frame(6, 60, vlan=(0x8100, 1)),
    ]
    veth.send(frames)
    got, _, _ = receive(port, pool, len(frames), bursts=(3,))
    assert got == frames
    assert all_free(pool)


@needs_root
def test_own_and_host_transmissions_are_not_received(veth: VethNs, make_phy) -> None:
    port, pool = make_phy()
    port.fileno()
    bufs = pool.alloc_frames([make_frame(i, 100) for i in range(50)])
    assert port.tx_burst(bufs) == 50
    host_send([make_frame(100 + i, 100) for i in range(20)], veth.host_if)  # via the kernel's qdisc path
    wire = [make_frame(200 + i, 100) for i in range(10)]
    veth.send(wire)
    got, _, _ = receive(port, pool, 100, timeout=0.5)
    assert got == wire


@needs_root
def test_kernel_drops_are_counted_in_the_shared_row(veth: VethNs, make_phy) -> None:
    port, pool = make_phy(block_size=16 * 1024, block_nr=4)  # a 64 KiB ring, for 400 KB of frames
    port.fileno()
    frames = [make_frame(i, 1000) for i in range(400)]
    veth.send(frames)
    time.sleep(0.05)
    got, _, _ = receive(port, pool, len(frames), bursts=(256,), timeout=0.5)
    port.poll_drops()
    drops = int(port.counters[RX_DROP])
    assert drops > 0
    assert len(got) + drops == len(frames)
    # What arrived is still an in-order subsequence of what was sent.
    seqs = [frame_seq(f) for f in got]
    assert seqs == sorted(seqs)
    seg = pool.seg
    assert np.shares_memory(port.counters, seg.phy_stats)
    assert int(seg.phy_stats[1, 0, RX_DROP]) == drops


@needs_root
def test_rx_jumbo_frames_land_in_large_buffers_in_order(make_segment) -> None:
    # Jumbo frames (and GSO aggregates) do not fit a 2 KiB pool buffer: they get a large one.
    with veth_pair_in_netns(mtu=9000) as v:
        seg = make_segment(phys=[PhyInfo(iface=v.host_if)])
        pool = BufferPool(seg)
        port = PhyPort(PHY0, PortContext(seg=seg, pool=pool, client_id=1))
        try:
            port.fileno()
            frames = [
                make_frame(0, 100),
                make_frame(1, 3000),
                make_frame(2, 2048),
                make_frame(3, 2049),
                make_frame(4, 60),
                make_frame(5, 9014),
            ]
            large_free = pool.large_free
            v.send(frames)
            got, _, _ = receive(port, pool, len(frames), timeout=2)
            assert got == frames
            assert int(port.counters[RX_DROP]) == 0
            assert pool.large_free == large_free  # the large buffers went back with free()
        finally:
            port.close()
            pool.close()


@needs_root
def test_pool_exhaustion_leaves_frames_in_the_ring(veth: VethNs, make_phy) -> None:
    port, pool = make_phy(nb_bufs=64)
    port.fileno()
    frames = [make_frame(i, 80) for i in range(150)]
    veth.send(frames)
    time.sleep(0.05)
    held: list[np.ndarray] = []
    first = port.rx_burst(1000)
    assert len(first) == 64
    held.append(first)
    assert len(port.rx_burst(1000)) == 0, "no buffers: nothing delivered, nothing lost"
    got = [pool.read(b) for b in first.tolist()]
    pool.free(first)
    rest, _, _ = receive(port, pool, len(frames) - len(first), bursts=(1000,))
    assert got + rest == frames
    assert int(port.counters[RX_DROP]) == 0


# -- transmit ------------------------------------------------------------------------------------


@needs_root
def test_tx_delivers_byte_identical_frames_in_order(veth: VethNs, make_phy) -> None:
    port, pool = make_phy()
    frames = mixed_frames(1600, seed=3)
    frames[5] = make_frame(5, 1518, vlan=(0x8100, 42))
    frames[6] = make_frame(6, 90, vlan=(0x88A8, 9, 0x8100, 10))
    cap = veth.capture(len(frames))
    sent = 0
    for lo, hi in ((0, 32), (32, 33), (33, 600), (600, 1600)):  # the last exceeds one sendmmsg vector
        bufs = pool.alloc_frames(frames[lo:hi])
        n = port.tx_burst(bufs)
        assert n == hi - lo, f"burst {lo}:{hi} accepted {n} (tx_error {port.tx_error})"
        sent += n
    out = cap.frames()
    assert out == frames
    assert all_free(pool), "transmitted buffers go back to the pool"
    assert int(port.counters[TX_DROP]) == 0


@needs_root
def test_tx_consumes_and_counts_frames_the_link_cannot_carry(veth: VethNs, make_phy) -> None:
    port, pool = make_phy()
    good = [
        make_frame(0, 60),
        make_frame(1, 1514),
        make_frame(2, 1518, vlan=(0x8100, 5)),
        make_frame(3, 14 + 6),
    ]
    bad = [
        b"",
        make_frame(9, 1515),
        bytes(10),
        make_frame(8, 1518, vlan=(0x88A8, 5)),
    ]  # 802.1ad gets no slack
    burst = [good[0], bad[0], good[1], bad[1], good[2], bad[2], bad[3], good[3]]
    cap = veth.capture(len(good), timeout=2)
    bufs = pool.alloc_frames(burst)
    good_bufs = bufs[[0, 2, 4, 7]].copy()
    # Each refused frame costs only itself: the good ones behind it are sent, and come first in
    # the burst, so the caller frees and counts exactly the refused ones.
    assert port.tx_burst(bufs) == len(good)
    assert bufs[: len(good)].tolist() == good_bufs.tolist()
    assert int(port.xstats[XS["tx_refused"]]) == len(bad)
    pool.free(bufs[len(good) :])
    assert cap.frames() == good
    assert all_free(pool)


@needs_root
def test_one_refused_frame_costs_only_itself(veth: VethNs, make_phy) -> None:
    port, pool = make_phy()
    frames = [make_frame(i, 200) for i in range(41)]
    frames[0] = make_frame(0, 4000)  # longer than the link's MTU
    cap = veth.capture(40, timeout=2)
    bufs = pool.alloc_frames(frames)
    assert port.tx_burst(bufs) == 40
    pool.free(bufs[40:])
    assert cap.frames() == frames[1:]
    assert int(port.xstats[XS["tx_refused"]]) == 1


@needs_root
def test_tx_into_a_dead_link_accepts_nothing_and_recovers(veth: VethNs, make_phy) -> None:
    port, pool = make_phy()
    frames = [make_frame(i, 100) for i in range(8)]
    veth.set_ns_link(False)  # carrier lost: veth drops, the socket reports ENOBUFS
    bufs = pool.alloc_frames(frames)
    assert port.tx_burst(bufs) == 0
    assert port.tx_error in (errno.ENOBUFS, errno.ENETDOWN)
    linux.set_link_up(veth.host_if, False)  # our own link down: ENETDOWN
    assert port.tx_burst(bufs) == 0
    assert port.tx_error == errno.ENETDOWN
    linux.set_link_up(veth.host_if, True)
    veth.set_ns_link(True)
    cap = veth.capture(len(frames))
    assert port.tx_burst(bufs) == len(frames), "no error left over from the failures"
    assert cap.frames() == frames
    assert all_free(pool)


@needs_root
def test_two_patched_phys_carry_ping_between_namespaces(make_segment) -> None:
    """Two phys patched back to back by a minimal forwarder: real IP traffic (ARP, ICMP) goes
    through unchanged, and a lone packet is not held back for long by the rx ring."""
    with (
        veth_pair_in_netns(ns_ip="10.77.0.1/24") as a,
        veth_pair_in_netns(ns_ip="10.77.0.2/24") as b,
    ):
        seg = make_segment(phys=[PhyInfo(iface=a.host_if), PhyInfo(iface=b.host_if)])
        pool = BufferPool(seg)
        ctx = PortContext(seg=seg, pool=pool, client_id=1)
        p0, p1 = PhyPort(PortId("phy", 0), ctx), PhyPort(PortId("phy", 1), ctx)
        stop = threading.Event()
        pairs = {p0.fileno(): (p0, p1), p1.fileno(): (p1, p0)}  # both rings up before any ping

        def forward() -> None:
            while not stop.is_set():
                for fd in select.select(list(pairs), [], [], 0.05)[0]:
                    src, dst = pairs[fd]
                    bufs = src.rx_burst(32)
                    n = dst.tx_burst(bufs)
                    pool.free(bufs[n:])

        t = threading.Thread(target=forward, daemon=True)
        t.start()
        try:
            r = a.run(["ping", "-c", "5", "-i", "0.2", "-W", "2", "10.77.0.2"], check=False)
        finally:
            stop.set()
            t.join(timeout=5)
            p0.close()
            p1.close()
            pool.close()
        assert r.returncode == 0, r.stdout + r.stderr
        assert " 0% packet loss" in r.stdout
        avg_ms = float(r.stdout.rsplit("=", 1)[1].split("/")[1])
        assert avg_ms < 20, r.stdout


@needs_root
def test_phy_to_phy_relay_batches_keep_order_and_counts(make_segment) -> None:
    """phy:0 -> phy:1 from the ringless socket in batches as large as a TCP flow without offloads
    brings (the relay's vector path): every frame arrives byte for byte and in order, and the
    counts hold; a batch with a tagged frame among plain ones goes frame by frame, tag restored."""
    with veth_pair_in_netns() as a, veth_pair_in_netns() as b:
        seg = make_segment(phys=[PhyInfo(iface=a.host_if), PhyInfo(iface=b.host_if)])
        pool = BufferPool(seg)
        ctx = PortContext(seg=seg, pool=pool, client_id=1)
        p0, p1 = PhyPort(PortId("phy", 0), ctx), PhyPort(PortId("phy", 1), ctx)
        try:
            p0.fileno()  # rx open (ring and ringless socket)
            p0._go_idle()  # the ringless socket gets the frames, as under a moderate flow
            plain = [make_frame(i, 60 + (i * 37) % 1455) for i in range(100)]
            mixed = [make_frame(100 + i, 200, vlan=(0x8100, 5) if i == 30 else ()) for i in range(40)]
            want = plain + mixed
            cap = b.capture(len(want))
            for group in (plain, mixed):
                a.send(group)
                moved = 0
                deadline = time.monotonic() + 5
                while moved < len(group) and time.monotonic() < deadline:
                    moved += p0.forward_to(p1, 256)
                assert moved == len(group)
            assert p0._relayed, "the frames went through the relay"
            got = cap.frames()
            assert [frame_seq(f) for f in got] == list(range(len(want)))
            assert got == want
            assert int(p0.counters[RX]) == int(p1.counters[TX]) == len(want)
            nbytes = sum(len(f) for f in want)
            assert int(p0.counters[RX_BYTES]) == int(p1.counters[TX_BYTES]) == nbytes
            assert int(p1.counters[TX_DROP]) == int(p0.counters[RX_DROP]) == 0
        finally:
            p0.close()
            p1.close()
            pool.close()


# -- lifetime ------------------------------------------------------------------------------------


@needs_root
def test_sockets_open_lazily_and_close_idempotently(veth: VethNs, make_phy) -> None:
    port, pool = make_phy()
    ifindex = linux.if_nametoindex(veth.host_if)
    assert packet_sockets_on(ifindex) == []
    assert port.tx_burst(pool.alloc_frames([make_frame(0, 60)])) == 1
    socks = packet_sockets_on(ifindex)
    assert [s["Proto"] for s in socks] == ["0000"], "a tx-only port owns no rx ring"
    port.fileno()
    # rx: the ring's socket and the ringless one it hands a trickle of traffic to
    assert sorted(s["Proto"] for s in packet_sockets_on(ifindex)) == ["0000", "0003", "0003"]
    port.close()
    port.close()
    assert packet_sockets_on(ifindex) == []

    # Closed is not dead: the next use reopens, as does a fresh port on the same phy.
    again = PhyPort(PHY0, port.ctx)
    try:
        again.fileno()
        veth.send([make_frame(1, 70)])
        got, _, _ = receive(again, pool, 1)
        assert got == [make_frame(1, 70)]
    finally:
        again.close()
    assert packet_sockets_on(ifindex) == []
    assert all_free(pool)


@needs_root
def test_rx_is_promiscuous_only_while_open(veth: VethNs, make_phy) -> None:
    port, _pool = make_phy()
    assert promiscuity(veth.host_if) == 0
    port.fileno()
    assert promiscuity(veth.host_if) == 1, "a NIC port receives every frame on the wire"
    port.close()
    assert promiscuity(veth.host_if) == 0, "and leaves the interface as it found it"


@needs_root
def test_rx_jumbo_frames_on_the_ringless_socket_land_in_large_buffers(make_segment) -> None:
    # An idle port reads per frame (latency); long frames spill into a spare large buffer there.
    with veth_pair_in_netns(mtu=9000) as v:
        seg = make_segment(phys=[PhyInfo(iface=v.host_if)])
        pool = BufferPool(seg)
        port = PhyPort(PHY0, PortContext(seg=seg, pool=pool, client_id=1))
        try:
            port.fileno()
            port.prepare_sleep(0)  # to the ringless socket
            frames = [make_frame(0, 100), make_frame(1, 9014), make_frame(2, 3000), make_frame(3, 60)]
            large_free = pool.large_free
            t0 = time.time_ns()
            v.send(frames)
            got, _, stamps = receive(port, pool, len(frames), timeout=2)
            assert got == frames
            assert int(port.counters[RX_DROP]) == 0
            # The kernel's arrival stamps, as on the ring: in order, before we read them.
            assert stamps == sorted(stamps) and t0 <= stamps[0]
            port.close()
            assert pool.large_free == large_free  # the spare went back too
        finally:
            port.close()
            pool.close()


@needs_root
def test_the_ringless_socket_delivers_tagged_and_jumbo_frames_into_pool_buffers(make_segment) -> None:
    """Idle (per-frame readiness, the V2 ring), frames come into pool buffers: VLAN tags put
    back, a jumbo frame in a large buffer, wire order kept, every buffer given back."""
    with veth_pair_in_netns(mtu=9000) as v:
        seg = make_segment(phys=[PhyInfo(iface=v.host_if)])
        pool = BufferPool(seg)
        port = PhyPort(PHY0, PortContext(seg=seg, pool=pool, client_id=1))
        try:
            port.fileno()
            assert port.prepare_sleep(0) == 0  # WAKES: frames now go to the ringless socket
            port.end_sleep()
            frames = [
                make_frame(0, 60),
                make_frame(1, 1514, vlan=(0x8100, 42)),
                make_frame(2, 8000),
                make_frame(3, 2046, vlan=(0x88A8, 9, 0x8100, 10)),
                make_frame(4, 61),
            ]
            v.send(frames)
            got, _, _ = receive(port, pool, len(frames), bursts=(32,))
            assert got == frames
            assert int(port.counters[RX_DROP]) == 0
        finally:
            port.close()
        assert_all_back(pool)


# -- the ringless socket's TPACKET_V2 ring ------------------------------------------------------

_VNET_SEND_SCRIPT = r"""
import socket, struct, sys
iface, hdrs = sys.argv[1], bytes.fromhex(sys.argv[2])
raw = sys.stdin.buffer.read()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.setsockopt(263, 15, 1)  # PACKET_VNET_HDR: every send starts with a struct virtio_net_hdr
s.bind((iface, 0))
off = i = 0
while off < len(raw):
    (n,) = struct.unpack_from("<H", raw, off)
    s.send(hdrs[10 * i : 10 * i + 10] + raw[off + 2 : off + 2 + n])
    off += 2 + n
    i += 1
"""


def idle(port: PhyPort) -> None:
    """Switch ``port`` to its ringless socket (per-frame readiness) and wait until it is done."""
    port.fileno()
    port.prepare_sleep(0)
    port.end_sleep()
    assert wait_until(lambda: not len(port.rx_burst(32)) and port._mode == IDLE, 5), "never went idle"


@needs_root
def test_idle_ring_runs_keep_order_bytes_stamps_and_tags(make_segment, monkeypatch) -> None:
    """Frames on the ringless socket's ring, read in bursts of every size (the per-frame path for
    a handful, vector runs beyond): byte for byte in wire order, VLAN tags put back, jumbo frames
    (queued whole beside their truncated slot) in large buffers, stamps in order, nothing lost."""
    monkeypatch.setattr(phy_module, "IDLE_MAX_PER_MS", 1 << 20)  # stay on the ringless socket
    with veth_pair_in_netns(mtu=9000) as v:
        seg = make_segment(phys=[PhyInfo(iface=v.host_if)])
        pool = BufferPool(seg)
        port = PhyPort(PHY0, PortContext(seg=seg, pool=pool, client_id=1))
        try:
            idle(port)
            frames = mixed_frames(400, seed=9)
            frames[50] = make_frame(50, 1514, vlan=(0x8100, 7))
            frames[120] = make_frame(120, 9014)
            frames[121] = make_frame(121, 4000, vlan=(0x88A8, 3, 0x8100, 4))
            frames[305] = make_frame(305, 60, vlan=(0x8100, 4095))
            t0 = time.time_ns()
            v.send(frames)
            got, sizes, stamps = receive(port, pool, len(frames), bursts=(1, 3, 32, 200, 5))
            assert port._mode == IDLE, "the frames came through the ringless socket"
            assert [frame_seq(f) for f in got] == list(range(len(frames)))
            assert got == frames
            assert max(sizes) > 4, "runs were read as vectors too"
            assert stamps == sorted(stamps) and t0 <= stamps[0]
            assert int(port.counters[RX_DROP]) == 0
        finally:
            port.close()
        assert_all_back(pool)


@needs_root
def test_idle_ring_carries_offload_metadata(make_segment) -> None:
    """A partial checksum marked in the sender's virtio_net_hdr reaches the pool buffer's header,
    for a run and a lone frame; for a frame whose tag the kernel took off and we put back, the
    checksum offset moves 4 bytes on with the frame."""
    with veth_pair_in_netns(offloads=True) as v:
        seg = make_segment(phys=[PhyInfo(iface=v.host_if)])
        pool = BufferPool(seg)
        port = PhyPort(PHY0, PortContext(seg=seg, pool=pool, client_id=1))
        try:
            idle(port)
            assert port.rx_vnet
            for count in (12, 1):
                frames = [make_frame(i, 200, vlan=(0x8100, 9) if i == 3 else ()) for i in range(count)]
                # NEEDS_CSUM, no GSO, csum_start after a 20-byte IPv4 header, offset 6 (UDP's).
                hdrs = [struct.pack("<BBHHHH", 1, 0, 0, 0, 38 if i == 3 else 34, 6) for i in range(count)]
                payload = b"".join(struct.pack("<H", len(f)) + f for f in frames)
                argv = [sys.executable, "-c", _VNET_SEND_SCRIPT, v.ns_if, b"".join(hdrs).hex()]
                r = subprocess.run(
                    ["ip", "netns", "exec", v.ns, *argv],
                    input=payload,
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
                assert r.returncode == 0, r.stderr
                got: list[tuple[bytes, bytes]] = []
                deadline = time.monotonic() + 5
                while len(got) < len(frames) and time.monotonic() < deadline:
                    bufs = port.rx_burst(32)
                    for b in bufs.tolist():
                        if pool.read(b)[6:12] == TEST_SRC:
                            got.append((pool.read(b), bytes(pool.vnet[b])))
                    pool.free(bufs)
                    if not len(bufs):
                        time.sleep(0.01)
                assert [f for f, _ in got] == frames
                assert [h for _, h in got] == hdrs
            assert port._mode == IDLE
        finally:
            port.close()
            pool.close()


@needs_root
def test_idle_ring_full_and_pool_dry_frames_wait_then_drops_are_counted(veth, make_phy, monkeypatch) -> None:
    """With the pool dry, frames stay in the ring (nothing delivered, nothing lost); once the ring
    is full the kernel drops, and those drops are counted in rx_drop; what arrives is the head of
    what was sent, in order."""
    monkeypatch.setattr(PhyPort, "IDLE_FRAMES", 64)
    port, pool = make_phy(nb_bufs=32)
    idle(port)
    frames = [make_frame(i, 80) for i in range(300)]
    veth.send(frames)
    first = port.rx_burst(1000)
    first = np.concatenate([first, port.rx_burst(1000)])
    assert len(first) == 32, "every buffer the pool had"
    assert len(port.rx_burst(1000)) == 0, "no buffers: nothing delivered"
    got = [pool.read(b) for b in first.tolist()]
    pool.free(first)
    rest, _, _ = receive(port, pool, 32, bursts=(1000,), timeout=1)
    got += rest
    port.poll_drops()
    assert got == frames[:64], "the ring held its 64 slots' worth, in order"
    assert int(port.counters[RX_DROP]) == len(frames) - 64
    assert port._mode == IDLE


@needs_root
def test_idle_ring_frames_no_buffer_can_hold_are_dropped_and_counted(make_segment) -> None:
    """Without large buffers a jumbo frame cannot be delivered: on the ringless socket's ring it
    is consumed and counted (rx_drop, rx_too_long), alone or inside a run, received or relayed,
    and the frames around it still come, in order."""
    with phy_pair(make_segment, (9000, 9000), nb_large=0) as (a, b, p0, p1, pool):
        idle(p0)
        lone = [make_frame(0, 100), make_frame(1, 5000), make_frame(2, 100)]
        run = [make_frame(3 + i, 3000 if i in (4, 20) else 300) for i in range(30)]
        want = [f for f in lone + run if len(f) <= 2048]
        a.send(lone)
        got, _, _ = receive(p0, pool, 2, bursts=(1,))
        a.send(run)
        more, _, _ = receive(p0, pool, 28, bursts=(64,))
        assert got + more == want
        assert int(p0.counters[RX_DROP]) == 3
        assert int(p0.xstats[XS["rx_too_long"]]) == 3
        # The same through the relay (phy to phy from the ringless socket).
        cap = b.capture(len(want))
        a.send(lone + run)
        moved = 0
        deadline = time.monotonic() + 5
        while moved < len(want) and time.monotonic() < deadline:
            moved += p0.forward_to(p1, 128)
        assert cap.frames() == want
        assert int(p0.counters[RX_DROP]) == 6
        assert int(p1.counters[TX]) == len(want)


@needs_root
def test_idle_ring_relays_jumbo_and_tagged_frames_in_runs(make_segment) -> None:
    """phy:0 -> phy:1 from the ringless socket's ring with jumbo frames (queued whole beside
    their slot) and tagged ones inside runs: every frame arrives byte for byte, in order."""
    with phy_pair(make_segment, (9000, 9000)) as (a, b, p0, p1, _pool):
        idle(p0)
        sizes = [9014 if i % 17 == 5 else 1514 if i % 3 else 64 for i in range(120)]
        want = [make_frame(i, n, vlan=(0x8100, i) if i % 11 == 2 else ()) for i, n in enumerate(sizes)]
        cap = b.capture(len(want))
        a.send(want)
        moved = 0
        deadline = time.monotonic() + 5
        while moved < len(want) and time.monotonic() < deadline:
            moved += p0.forward_to(p1, 128)
        assert p0._relayed and p0._mode == IDLE
        assert cap.frames() == want
        assert int(p0.counters[RX]) == int(p1.counters[TX]) == len(want)
        assert int(p0.counters[RX_BYTES]) == int(p1.counters[TX_BYTES]) == sum(len(f) for f in want)
        assert int(p0.counters[RX_DROP]) == int(p1.counters[TX_DROP]) == 0


@needs_root
def test_idle_ring_relays_a_lone_frame_with_one_send_and_a_refused_one_costs_only_itself(
    make_segment, monkeypatch
) -> None:
    """A frame alone in the ringless socket's ring (the idle panel's ping) goes phy:0 -> phy:1
    by the lone-frame path, byte for byte and counted as a run is; one longer than phy:1's MTU is
    refused there, counted (``tx_refused``, ``tx_drop``), and the next lone frame still goes."""
    from spp.engine.ports.framering import FrameRing

    def no_run(*_a: object, **_k: object) -> object:
        raise AssertionError("a lone frame took the run path")

    with phy_pair(make_segment, (None, 1000)) as (a, b, p0, p1, _pool):
        idle(p0)
        monkeypatch.setattr(FrameRing, "relay", no_run)
        sizes = [60, 1014, 1400, 200, 1014]  # the 1400-byte frame is over phy:1's MTU
        frames = [make_frame(i, n) for i, n in enumerate(sizes)]
        want = [f for f in frames if len(f) <= 1014]
        cap = b.capture(len(want))
        for f in frames:
            a.send([f])
            assert wait_until(p0._frames.ready, 5)
            assert p0.forward_to(p1, 32) == 1
        assert cap.frames() == want
        assert p0._relayed and p0._mode == IDLE
        assert int(p0.counters[RX]) == len(frames)
        assert int(p0.counters[RX_BYTES]) == sum(sizes)
        assert int(p1.counters[TX]) == len(want)
        assert int(p1.counters[TX_BYTES]) == sum(len(f) for f in want)
        assert int(p1.counters[TX_DROP]) == 1
        assert int(p1.xstats[XS["tx_refused"]]) == 1
        assert int(p0.counters[RX_DROP]) == 0


@needs_root
def test_rx_one_and_tx_one_move_a_lone_frame_as_an_int(make_segment) -> None:
    """The idle panel's pool path: rx_one hands over a lone frame from the ringless socket's ring
    as a buffer index (bytes, length, kernel stamp and a "nothing to do" header), answers SOME
    while a run waits and NOTHING when none does; tx_one sends one buffer byte for byte, and one
    over the link's MTU is refused and counted, costing only itself."""
    from spp.engine.ports.base import NOTHING, SOME

    with phy_pair(make_segment, (None, 1000)) as (a, b, p0, p1, pool):
        idle(p0)
        assert p0.rx_one() == NOTHING
        frames = [make_frame(i, n) for i, n in enumerate((60, 1014, 1400, 300))]
        cap = b.capture(3)
        t0 = time.time_ns()
        for f in frames:
            a.send([f])
            assert wait_until(p0._frames.ready, 5)
            one = p0.rx_one()
            assert one >= 0
            assert pool.read(one) == f and int(pool.lengths[one]) == len(f)
            assert t0 - 10**9 < int(pool.stamps[one]) < time.time_ns() + 10**9
            assert int(pool.vnet_word[one]) == 0
            assert p1.tx_one(one) == (0 if len(f) > 1014 else 1)
            if len(f) > 1014:
                pool.free_one(one)
        assert cap.frames() == [f for f in frames if len(f) <= 1014]
        assert int(p1.xstats[XS["tx_refused"]]) == 1
        a.send(frames[:2])
        assert wait_until(lambda: p0._frames._run(4) == 2, 5)
        assert p0.rx_one() == SOME
        got = receive(p0, pool, 2)[0]
        assert got == frames[:2]
        assert p0.rx_one() == NOTHING
