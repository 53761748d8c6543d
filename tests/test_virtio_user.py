"""Our virtio-user driver against our vhost back-end (in one process, and across two nfvs), and
against dpdk-testpmd's net_vhost back-end."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from spp.engine.offload import GSO_TCPV4, NEEDS_CSUM, XS
from spp.engine.portid import PortId
from spp.engine.ports import PortContext, open_port
from spp.engine.ports.base import NOTHING, RX_DROP, SOME, TX_DROP, WAKES, Port
from spp.engine.ports.vhost import VhostPort
from spp.engine.ports.virtio_user import VirtioUserPort
from spp.engine.virtio import defs as vd
from spp.engine.virtio.message import PeerGone, recv_message, send_reply, u64
from spp.integrations.testbed import Testbed, wait_for
from spp.processes.options import OptionError, port_options
from tests.test_engine_ports import mixed_frames, read_pcap, write_pcap
from tests.test_offload_units import finished, partial, set_vnet
from tests.testpmd import Testpmd, needs_testpmd

#: mixed sizes, plus a full 2048-byte frame: larger than a 2 KiB receive buffer with its header,
#: so it travels as merged receive buffers
FRAMES = [*mixed_frames(400, seed=3), bytes(range(256)) * 8]


def drain(port: Port) -> None:
    """Forget notifications already delivered to ``port`` (its kick or call eventfd)."""
    fd = port.device._queues[1].kick_fd if isinstance(port, VhostPort) else port.fileno()
    with contextlib.suppress(BlockingIOError):
        os.eventfd_read(fd)


def exchange(
    src: Port, dst: Port, frames: list[bytes], timeout: float = 20, wait_fd: int | None = None
) -> list[bytes]:
    """Send ``frames`` from src to dst (retrying what is refused) and return what dst received.
    At most 128 are in flight, so an echoing peer never finds our receive ring full."""
    pool = src.pool
    bufs = pool.alloc_frames(frames)
    sent, got = 0, []
    end = time.monotonic() + timeout
    while len(got) < len(frames):
        if sent < len(bufs):
            sent += src.tx_burst(bufs[sent : min(len(bufs), len(got) + 128)])
        if wait_fd is not None:  # dst is asleep: the packets must wake it
            assert select.select([wait_fd], [], [], timeout)[0], "no notification"
            wait_fd = None
        r = dst.rx_burst(256)
        got += [pool.read(int(b)) for b in r]
        pool.free(r)
        assert time.monotonic() < end, f"{sent} sent, {len(got)} received"
    return got


def wait_running(*ports: Port) -> None:
    wait_for(lambda: all(p.info()["running"] for p in ports), 10, "the vhost-user handshake")


@pytest.fixture
def sock_ctx(port_ctx: PortContext, tmp_path) -> PortContext:
    port_ctx.options["vhost-dir"] = str(tmp_path)
    return port_ctx


@contextlib.contextmanager
def connected_pair(ctx: PortContext, num: int) -> Iterator[tuple[VhostPort, VirtioUserPort]]:
    """``vhost:num`` and ``virtio_user:num`` on one socket, their handshake done; closed after."""
    vhost = open_port(PortId("vhost", num), ctx)
    vuser = open_port(PortId("virtio_user", num), ctx)
    try:
        assert isinstance(vhost, VhostPort) and isinstance(vuser, VirtioUserPort)
        wait_running(vhost, vuser)
        yield vhost, vuser
    finally:
        vuser.close()
        vhost.close()


ZERO_COPY = pytest.mark.parametrize("zero_copy", ["0", "1"], ids=["copy", "zero-copy"])


@ZERO_COPY
def test_virtio_user_and_vhost_both_ways_byte_identical(sock_ctx, zero_copy):
    sock_ctx.options["virtio_user:3:zero_copy"] = zero_copy
    vhost = open_port(PortId("vhost", 3), sock_ctx)
    vuser = open_port(PortId("virtio_user", 3), sock_ctx)
    try:
        wait_running(vhost, vuser)
        assert exchange(vuser, vhost, FRAMES) == FRAMES
        assert exchange(vhost, vuser, FRAMES) == FRAMES
        assert vhost.info()["errors"] == vuser.info()["errors"] == 0
    finally:
        vuser.close()
        vhost.close()
    assert not os.path.exists(vhost.path)  # the server's socket goes with the port


def test_virtio_user_reconnects_when_the_backend_returns(sock_ctx):
    vuser = open_port(PortId("virtio_user", 4), sock_ctx)
    try:
        frame = [bytes(60)]
        bufs = sock_ctx.pool.alloc_frames(frame)
        assert vuser.tx_burst(bufs) == 0  # nothing listens yet: refused
        sock_ctx.pool.free(bufs)
        for _ in range(2):
            vhost = open_port(PortId("vhost", 4), sock_ctx)
            try:
                wait_running(vhost, vuser)
                assert exchange(vuser, vhost, FRAMES[:50]) == FRAMES[:50]
            finally:
                vhost.close()
            wait_for(lambda: not vuser.info()["connected"], 10, "the driver to see the back-end go")
    finally:
        vuser.close()


def test_virtio_user_vhost_server_mode_pair(sock_ctx):
    """The driver as server (``server=1``), the back-end as client (``--vhost-client``)."""
    path = str(Path(sock_ctx.options["vhost-dir"]) / "pair5")
    sock_ctx.options.update(
        {"virtio_user:5": path, "virtio_user:5:server": "1", "vhost:5": path, "vhost:5:client": "1"}
    )
    vuser = open_port(PortId("virtio_user", 5), sock_ctx)
    vhost = open_port(PortId("vhost", 5), sock_ctx)
    try:
        wait_running(vhost, vuser)
        assert exchange(vhost, vuser, FRAMES) == FRAMES
    finally:
        vhost.close()
        vuser.close()


@needs_testpmd
@ZERO_COPY
def test_virtio_user_against_testpmd_net_vhost(sock_ctx, tmp_path, zero_copy):
    """testpmd's vhost back-end in io mode echoes what our driver sends, byte for byte (zero-copy:
    testpmd reads and writes our pool buffers, through the second memory region)."""
    sock_ctx.options["virtio_user:0:zero_copy"] = zero_copy
    sock = tmp_path / "tpvhost"
    with Testpmd(f"net_vhost0,iface={sock}", "io", tmp_path / "testpmd.log") as tp:
        tp.wait_output("testpmd>")
        tp.command("start")
        tp.wait_output("packet forwarding - ports")
        sock_ctx.options["virtio_user:0"] = str(sock)
        vuser = open_port(PortId("virtio_user", 0), sock_ctx)
        try:
            wait_running(vuser)
            time.sleep(0.5)  # testpmd's port turns "link up" a moment after the handshake
            got = exchange(vuser, vuser, FRAMES)
        finally:
            vuser.close()
        stats = tp.stop_stats()
    assert got == FRAMES
    assert stats["rx"] == stats["tx"] == len(FRAMES)


def test_virtio_user_nfv_to_vhost_nfv_byte_identical(tmp_path):
    """pcap -> virtio_user:0 (nfv 2) ==vhost-user==> vhost:0 (nfv 1) -> pcap, and back the other way."""
    socks = tmp_path / "s"
    socks.mkdir()
    base = 600 + os.getpid() % 50
    a_in, a_out, b_in, b_out = base, base + 50, base + 100, base + 150
    files = [f"/tmp/spp-{d}{n}.pcap" for n in (a_in, a_out, b_in, b_out) for d in ("rx", "tx")]
    frames = mixed_frames(200, seed=9)  # fewer than a ring holds: nothing refused, however late
    # the receiving side runs on a loaded machine
    write_pcap(f"/tmp/spp-rx{a_in}.pcap", frames)
    write_pcap(f"/tmp/spp-rx{b_in}.pcap", frames[::-1])
    try:
        with Testbed(nb_rings=2, log_dir=tmp_path / "logs") as bed:
            back = bed.start_nfv(1, extra=["--vhost-dir", str(socks)])
            front = bed.start_nfv(2, lcores="0,1", extra=["--vhost-dir", str(socks)])
            back.add("vhost:0")
            front.add("virtio_user:0")
            wait_for(lambda: front.port_stats()["virtio_user:0"]["running"], 10, "the handshake")
            for nfv, src, dst in ((front, a_in, b_out), (back, b_in, a_out)):
                nfv.add(f"pcap:{src}")
                nfv.add(f"pcap:{dst}")
            front.patch(f"pcap:{a_in}", "virtio_user:0")
            front.patch("virtio_user:0", f"pcap:{b_out}")
            back.patch("vhost:0", f"pcap:{a_out}")
            back.patch(f"pcap:{b_in}", "vhost:0")
            back.forward()
            front.forward()
            wait_for(
                lambda: (
                    back.port_stats()["vhost:0"]["rx"] == 200
                    and front.port_stats()["virtio_user:0"]["rx"] == 200
                ),
                20,
                "200 frames each way",
            )
            back.stop()
            front.stop()
            back.delete(f"pcap:{a_out}")
            front.delete(f"pcap:{b_out}")
            assert back.port_stats()["vhost:0"]["tx_drop"] == 0
            assert front.port_stats()["virtio_user:0"]["tx_drop"] == 0
        assert read_pcap(Path(f"/tmp/spp-tx{a_out}.pcap")) == frames
        assert read_pcap(Path(f"/tmp/spp-tx{b_out}.pcap")) == frames[::-1]
    finally:
        for f in files:
            if os.path.exists(f):
                os.unlink(f)


def test_pool_exhaustion_leaves_packets_in_the_ring(sock_ctx):
    vhost = open_port(PortId("vhost", 6), sock_ctx)
    vuser = open_port(PortId("virtio_user", 6), sock_ctx)
    pool = sock_ctx.pool
    try:
        wait_running(vhost, vuser)
        bufs = pool.alloc_frames(FRAMES[:100])
        assert vuser.tx_burst(bufs) == 100
        hoard = [pool.alloc(512)]
        while len(hoard[-1]):  # everything that is left
            hoard.append(pool.alloc(512))
        assert len(vhost.rx_burst(256)) == 0
        for h in hoard:
            pool.free(h)
        got = vhost.rx_burst(256)
        assert [pool.read(int(b)) for b in got] == FRAMES[:100]
        pool.free(got)
        assert np.all(vhost.counters == 0)  # nothing lost, nothing counted as dropped
    finally:
        vuser.close()
        vhost.close()


@pytest.mark.parametrize("event_idx", [True, False], ids=["event-idx", "flags-zero-copy"])
def test_notifications_wake_a_sleeping_side_and_stay_quiet_while_busy(sock_ctx, event_idx):
    """Kicks (driver -> vhost) and calls (vhost -> driver), with VIRTIO_RING_F_EVENT_IDX or with
    the NO_NOTIFY / NO_INTERRUPT flags: after prepare_sleep the peer's next packet makes the
    port's descriptor readable; while the port is busy the peer does not notify."""
    vhost = open_port(PortId("vhost", 7), sock_ctx)
    sock_ctx.options["virtio_user:7"] = vhost.path
    if not event_idx:  # (the notification logic is the same with either driver layout)
        sock_ctx.options["virtio_user:7:zero_copy"] = "1"
    vuser = VirtioUserPort(PortId("virtio_user", 7), sock_ctx, event_idx=event_idx)
    pool = sock_ctx.pool
    try:
        wait_running(vhost, vuser)
        assert vuser.driver.txq.event_idx is event_idx
        for sleeper, peer in ((vhost, vuser), (vuser, vhost)):
            for _ in range(3):
                assert exchange(peer, sleeper, FRAMES[:1]) == FRAMES[:1]  # busy: notifications off
                assert sleeper.prepare_sleep(0) == WAKES
                sleeper.end_sleep()
                assert exchange(peer, sleeper, FRAMES[:1], wait_fd=sleeper.fileno()) == FRAMES[:1]
            # busy again: the peer's packets raise no notification
            assert exchange(peer, sleeper, FRAMES[:1]) == FRAMES[:1]
            drain(sleeper)
            bufs = pool.alloc_frames(FRAMES[:1])
            assert peer.tx_burst(bufs) == 1
            assert not select.select([sleeper.fileno()], [], [], 0.2)[0]
            got = sleeper.rx_burst(8)
            assert len(got) == 1
            pool.free(got)
    finally:
        vuser.close()
        vhost.close()


def aggregate_and_partial(pool):
    """A TCP/IPv4 aggregate of six segments (a large buffer) and a small frame with a partial
    checksum, with their offload metadata; and the wire frames they stand for."""
    payload = bytes((j * 7) & 0xFF for j in range(1448 * 5 + 100))
    agg, start = partial(False, True, 0, payload, 5000, flags=0x19)
    small, sstart = partial(False, True, 0, b"hello", 77)
    bufs = pool.alloc_frames([small, agg])
    assert bufs[1] >= pool.large_base
    set_vnet(pool, int(bufs[0]), NEEDS_CSUM, 0, 0, 0, sstart, 16)
    set_vnet(pool, int(bufs[1]), NEEDS_CSUM, GSO_TCPV4, start + 20, 1448, start, 16)
    wire = [finished(False, True, 0, b"hello", 77, 0x18, 7)] + [
        finished(
            False,
            True,
            0,
            payload[k * 1448 : (k + 1) * 1448],
            5000 + k * 1448,
            0x19 if k == 5 else 0x10,
            7 + k,
        )
        for k in range(6)
    ]
    return bufs, [small, agg], [bytes(pool.vnet[int(b)]) for b in bufs], wire


def receive(port: Port, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` frames from ``port``, each with its offload metadata."""
    pool, got = port.pool, []

    def more() -> bool:
        r = port.rx_burst(64)
        got.extend((pool.read(int(b)), bytes(pool.vnet[int(b)]) if pool.vnet_word[b] else b"") for b in r)
        pool.free(r)
        return len(got) >= count

    wait_for(more, 10, f"{count} frames")
    return got


@ZERO_COPY
def test_offloads_pass_between_virtio_user_and_vhost_untouched(sock_ctx, zero_copy):
    """Both sides negotiate checksum and TSO offloads: a partial checksum and a 64 KiB-class TCP
    aggregate cross in either direction as they are, metadata included; nothing is finished."""
    sock_ctx.options["virtio_user:8:zero_copy"] = zero_copy
    vhost = open_port(PortId("vhost", 8), sock_ctx)
    vuser = open_port(PortId("virtio_user", 8), sock_ctx)
    pool = sock_ctx.pool
    try:
        wait_running(vhost, vuser)
        for src, dst in ((vhost, vuser), (vuser, vhost)):
            bufs, frames, meta, _ = aggregate_and_partial(pool)
            assert src.tx_burst(bufs) == 2
            assert receive(dst, 2) == list(zip(frames, meta, strict=True))
        for port in (vhost, vuser):
            assert not port.xstats.any() and not port.counters[1::2].any()
    finally:
        vuser.close()
        vhost.close()


def test_offloads_are_finished_for_a_driver_that_declines_them(sock_ctx):
    """A driver without GUEST_CSUM/TSO gets wire frames: the partial checksum completed, the
    aggregate segmented in software (counted); and it sends only plain frames."""
    vhost = open_port(PortId("vhost", 9), sock_ctx)
    sock_ctx.options["virtio_user:9"] = vhost.path
    vuser = VirtioUserPort(PortId("virtio_user", 9), sock_ctx, offloads=False)
    pool = sock_ctx.pool
    try:
        wait_running(vhost, vuser)
        assert vhost.device.deliver_caps == 0 and vuser.driver.send_caps == 0
        bufs, _, _, wire = aggregate_and_partial(pool)
        assert vhost.tx_burst(bufs) == 2
        assert receive(vuser, 7) == [(f, b"") for f in wire]
        assert vhost.xstats[XS["sw_gso"]] == 1 and vhost.xstats[XS["sw_segments"]] == 6
        assert vhost.xstats[XS["sw_csum"]] == 1
        bufs, _, _, wire = aggregate_and_partial(pool)
        assert vuser.tx_burst(bufs) == 2
        assert receive(vhost, 7) == [(f, b"") for f in wire]
        assert vuser.xstats[XS["sw_gso"]] == 1
    finally:
        vuser.close()
        vhost.close()


@ZERO_COPY
def test_jumbo_frames_cross_both_ways(sock_ctx, zero_copy):
    """Frames longer than a pool buffer (9000 B jumbo, 60 KiB): from the driver in a large transmit
    slot (zero-copy: the large buffer itself) into a large pool buffer, to the driver as merged
    receive buffers joined into one."""
    sock_ctx.options["virtio_user:10:zero_copy"] = zero_copy
    vhost = open_port(PortId("vhost", 10), sock_ctx)
    vuser = open_port(PortId("virtio_user", 10), sock_ctx)
    frames = [bytes(range(256)) * 35 + b"x" * 40, b"small" * 20, bytes(reversed(range(256))) * 240]
    try:
        wait_running(vhost, vuser)
        for _ in range(3):  # more than the driver's large slots over time: they are reused
            assert exchange(vuser, vhost, frames * 8) == frames * 8
            assert exchange(vhost, vuser, frames * 8) == frames * 8
        assert not vhost.xstats.any() and not vuser.xstats.any()
    finally:
        vuser.close()
        vhost.close()


def test_nonsense_metadata_from_the_driver_is_dropped_and_counted(sock_ctx):
    pool = sock_ctx.pool
    with connected_pair(sock_ctx, 11) as (vhost, vuser):
        frames = mixed_frames(6, seed=4)
        bufs = pool.alloc_frames(frames)
        set_vnet(pool, int(bufs[1]), 0x40, 0, 0, 0, 0, 0)  # an unknown flag
        set_vnet(pool, int(bufs[3]), NEEDS_CSUM, 0, 0, 0, 4000, 16)  # csum_start past the end
        set_vnet(pool, int(bufs[4]), NEEDS_CSUM, GSO_TCPV4, 54, 0, 34, 16)  # gso without a size
        assert vuser.driver.tx_burst(pool, bufs) == 6  # raw: the metadata goes out as it is
        assert [f for f, _ in receive(vhost, 3)] == [frames[i] for i in (0, 2, 5)]
        assert vhost.xstats[XS["rx_bad_vnet"]] == 3 and vhost.counters[1] == 3


def test_queue_size_from_the_vdev_option(sock_ctx):
    """``net_virtio_userN,queue_size=N`` sets both rings' size; the default is 4096; a size that
    is not a power of two in 64..4096 is refused naming the option."""
    sock_dir = sock_ctx.options["vhost-dir"]
    sock_ctx.options.update(port_options([f"net_virtio_user6,path={sock_dir}/sock6,queue_size=256"]))
    assert sock_ctx.options["virtio_user:6:queue_size"] == "256"
    for bad in ("100", "8192", "x", "32"):
        with pytest.raises(OptionError, match="queue_size"):
            port_options([f"net_virtio_user6,path={sock_dir}/sock6,queue_size={bad}"])
    vhost = open_port(PortId("vhost", 6), sock_ctx)
    small = open_port(PortId("virtio_user", 6), sock_ctx)
    default = open_port(PortId("virtio_user", 7), sock_ctx)
    try:
        assert small.driver.size == 256 and default.driver.size == 4096
        wait_running(vhost, small)
        # more frames than the ring holds, both ways: slots are reused as they come back
        frames = FRAMES[:400] + FRAMES[:400]
        assert exchange(small, vhost, frames) == frames
        assert exchange(vhost, small, frames) == frames
    finally:
        default.close()
        small.close()
        vhost.close()


def test_zero_copy_shares_pool_buffers_both_ways_and_gives_them_all_back(sock_ctx):
    """With a pool it can share, the driver posts pool buffers themselves: the back-end reads a
    transmitted buffer where it lies (a change made after tx_burst is what arrives) and writes
    received frames into the buffers on the receive ring. Every buffer it held comes back when
    the back-end goes away, and when the driver closes with packets still in flight."""
    pool = sock_ctx.pool
    before, large_before = pool.available, pool.large_free
    sock_ctx.options["virtio_user:11:zero_copy"] = "1"
    vhost = open_port(PortId("vhost", 11), sock_ctx)
    vuser = open_port(PortId("virtio_user", 11), sock_ctx)
    try:
        wait_running(vhost, vuser)
        drv = vuser.driver
        assert drv.zc and drv.size == 1024  # (the zero-copy default: a ring of pool buffers)
        assert pool.available == before - drv.size  # the receive ring holds pool buffers
        bufs = pool.alloc_frames([bytes(60)] * 4)
        assert vuser.tx_burst(bufs) == 4
        pool.write(int(bufs[2]), b"\xaa" * 60)  # not copied at tx_burst: the back-end sees this
        assert [f for f, _ in receive(vhost, 4)] == [bytes(60), bytes(60), b"\xaa" * 60, bytes(60)]
        posted = set(drv.held_rx.tolist())
        assert vhost.tx_burst(pool.alloc_frames(FRAMES[:8])) == 8
        got = []
        wait_for(lambda: got.extend(vuser.rx_burst(64).tolist()) or len(got) >= 8, 10, "8 frames")
        assert set(got) <= posted  # received where they were written
        assert [pool.read(b) for b in got] == FRAMES[:8]
        pool.free(np.array(got, np.uint32))
        assert exchange(vuser, vhost, FRAMES) == FRAMES
        assert exchange(vhost, vuser, FRAMES) == FRAMES
        assert vhost.info()["errors"] == vuser.info()["errors"] == 0
        # the back-end goes with frames of ours in flight: the driver takes everything back
        assert vuser.tx_burst(pool.alloc_frames(FRAMES[:100])) == 100
        vhost.close()
        wait_for(lambda: not vuser.info()["connected"], 10, "the driver to see the back-end go")
        assert (pool.available, pool.large_free) == (before, large_before)
        # and again when the driver closes first, with a large frame in flight
        vhost = open_port(PortId("vhost", 11), sock_ctx)
        wait_running(vhost, vuser)
        assert vuser.tx_burst(pool.alloc_frames([bytes(60), bytes(9000)])) == 2
    finally:
        vuser.close()
        vhost.close()
    assert (pool.available, pool.large_free) == (before, large_before)


def test_copying_driver_by_default(sock_ctx):
    """Unless ``zero_copy=1``, frames are copied through the driver's own slots, and the pool
    lends it nothing."""
    sock_dir = sock_ctx.options["vhost-dir"]
    for value in ("0", "1"):
        opts = port_options([f"net_virtio_user12,path={sock_dir}/sock12,zero_copy={value}"])
        assert opts["virtio_user:12:zero_copy"] == value
    with pytest.raises(OptionError, match="zero_copy"):
        port_options([f"net_virtio_user12,path={sock_dir}/sock12,zero_copy=yes"])
    pool = sock_ctx.pool
    before = pool.available
    vhost = open_port(PortId("vhost", 12), sock_ctx)
    vuser = open_port(PortId("virtio_user", 12), sock_ctx)
    try:
        wait_running(vhost, vuser)
        assert not vuser.driver.zc
        assert pool.available == before
        assert exchange(vuser, vhost, FRAMES) == FRAMES
        assert exchange(vhost, vuser, FRAMES) == FRAMES
    finally:
        vuser.close()
        vhost.close()
    assert pool.available == before


def test_zero_copy_driver_refuses_a_descriptor_returned_twice(sock_ctx):
    """A back-end that returns a receive descriptor twice, or one it does not hold, would make
    the driver hand one pool buffer on twice: the driver stops the connection instead (an
    error), and the pool stays whole."""
    pool = sock_ctx.pool
    before = pool.available
    sock_ctx.options["virtio_user:13:zero_copy"] = "1"
    vhost = open_port(PortId("vhost", 13), sock_ctx)
    vuser = open_port(PortId("virtio_user", 13), sock_ctx)
    try:
        wait_running(vhost, vuser)
        drv = vuser.driver
        assert exchange(vhost, vuser, FRAMES[:10]) == FRAMES[:10]
        for n, ids in enumerate(([0, 0], [5, 6]), 1):
            q = drv.rxq
            with drv.lock:
                if n == 2:  # 5 and 6 are not held by the back-end: taken back just before
                    q.take_back(np.array([5, 6]))
                for k, i in enumerate(ids):
                    at = (q.last_used + k) & q.mask
                    q.ring.used_ids[at] = i
                    q.ring.used_lens[at] = drv.hdr_len + 60
                    q.num_buffers[i] = 1
                q.ring.used_idx[0] = (q.last_used + len(ids)) & 0xFFFF
            assert len(vuser.rx_burst(64)) == 0
            assert drv.errors == n and "used descriptor" in drv.last_error
            wait_running(vhost, vuser)  # a new connection, the ring posted afresh
        assert exchange(vhost, vuser, FRAMES[:10]) == FRAMES[:10]
        assert drv.quarantined == 0  # our back-end confirmed it stopped: everything came back
    finally:
        vuser.close()
        vhost.close()
    assert pool.available == before


def break_receive_ring(drv) -> None:
    """Play a back-end that returns receive descriptor 0 twice (the driver must give up)."""
    q = drv.rxq
    with drv.lock:
        for k in range(2):
            at = (q.last_used + k) & q.mask
            q.ring.used_ids[at] = 0
            q.ring.used_lens[at] = drv.hdr_len + 60
        q.num_buffers[0] = 1
        q.ring.used_idx[0] = (q.last_used + 2) & 0xFFFF


class SilentBackend(threading.Thread):
    """A vhost-user back-end that takes the driver's memory table and rings (offering no
    protocol features, so nothing is acknowledged), then never answers GET_VRING_BASE: a
    back-end that may go on writing into the pool buffers it holds."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        self.requests: list[int] = []

    def run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            try:
                while True:
                    msg = recv_message(conn)
                    msg.close_fds()
                    self.requests.append(msg.request)
                    if msg.request == vd.GET_FEATURES:
                        send_reply(conn, vd.GET_FEATURES, u64(1 << vd.F_VERSION_1))
            except (PeerGone, OSError):
                pass


def test_zero_copy_driver_keeps_out_of_the_pool_what_a_silent_back_end_holds(sock_ctx):
    """When the rings break, the zero-copy driver asks the back-end to stop them before it takes
    its pool buffers back. One that does not answer may still write into them: they stay out of
    the pool, counted in the port's info, and nothing else is disturbed."""
    pool = sock_ctx.pool
    before = pool.available
    sock_ctx.options["virtio_user:15:zero_copy"] = "1"
    backend = SilentBackend(f"{sock_ctx.options['vhost-dir']}/sock15")
    backend.start()
    vuser = open_port(PortId("virtio_user", 15), sock_ctx)
    try:
        wait_running(vuser)
        drv = vuser.driver
        assert pool.available == before - drv.size  # a pool buffer behind every receive slot
        break_receive_ring(drv)
        assert len(vuser.rx_burst(64)) == 0
        assert "used descriptor" in drv.last_error
        wait_for(lambda: vuser.info()["quarantined"] == drv.size, 10, "the buffers to be quarantined")
        assert vd.GET_VRING_BASE in backend.requests  # it was asked to stop first
        assert pool.available == before - drv.size  # none came back to be handed out again
    finally:
        vuser.close()
        backend.listener.close()
    assert pool.available == before - drv.size  # not even on close


def test_zero_copy_driver_posts_receive_buffers_once_the_pool_has_them(sock_ctx):
    """Connected while the pool is exhausted, the zero-copy driver posts no receive buffers;
    once buffers are free again its next receive call posts them, and frames arrive."""
    pool = sock_ctx.pool
    sock_ctx.options["virtio_user:14:zero_copy"] = "1"
    hoard = [pool.alloc(512)]
    while len(hoard[-1]):
        hoard.append(pool.alloc(512))
    vhost = open_port(PortId("vhost", 14), sock_ctx)
    vuser = open_port(PortId("virtio_user", 14), sock_ctx)
    try:
        wait_running(vhost, vuser)
        assert vuser.driver.rxq.nlent == 0
        for h in hoard[1:]:
            pool.free(h)
        one = pool.alloc_frames(FRAMES[:1])
        assert vhost.tx_burst(one) == 0  # nothing posted yet: refused
        pool.free(one)
        assert len(vuser.rx_burst(64)) == 0  # ... and now posted
        assert vuser.driver.rxq.nlent == vuser.driver.size
        assert exchange(vhost, vuser, FRAMES) == FRAMES
    finally:
        vuser.close()
        vhost.close()
        pool.free(hoard[0])


#: lone packets of mixed sizes, the last one 1,514 bytes
LONE_FRAMES = [*mixed_frames(8, seed=5), bytes(range(256)) * 5 + bytes(234)]


def rx_one_within(port: Port, timeout: float = 10) -> int:
    """The first answer of ``port.rx_one()`` that is not NOTHING."""
    end = time.monotonic() + timeout
    while (got := port.rx_one()) == NOTHING:
        assert time.monotonic() < end, "nothing came"
        time.sleep(0.0005)
    return got


def lone_packets_arrive(sender: Port, receiver: Port, lone: bool = True) -> None:
    """Each of LONE_FRAMES, sent alone, comes out of ``receiver.rx_one`` (``lone`` false: it
    is left to rx_burst, SOME, and arrives that way)."""
    pool = sender.pool
    for f in LONE_FRAMES:
        assert sender.tx_burst(pool.alloc_frames([f])) == 1
        b = rx_one_within(receiver)
        if lone:
            assert b >= 0 and pool.read(b) == f
            pool.free_one(b)
        else:
            assert b == SOME
            assert [g for g, _ in receive(receiver, 1)] == [f]


def runs_go_to_rx_burst(sender: Port, receiver: Port, idle: int = NOTHING) -> None:
    """Three packets at once: ``receiver.rx_one`` leaves the run to rx_burst, and answers SOME
    without a look until a burst comes back empty (then ``idle``)."""
    pool = sender.pool
    assert sender.tx_burst(pool.alloc_frames(LONE_FRAMES[:3])) == 3
    assert rx_one_within(receiver) == SOME  # a run: the burst path takes it whole
    assert [f for f, _ in receive(receiver, 3)] == LONE_FRAMES[:3]
    assert receiver.rx_one() == SOME  # runs came: left to rx_burst until a burst is empty
    assert len(receiver.rx_burst(64)) == 0
    assert receiver.rx_one() == idle


def no_burst(bufs: np.ndarray) -> int:
    """A port's tx_burst, replaced where a lone packet must not take it."""
    raise AssertionError("a lone packet went the burst way")


@ZERO_COPY
def test_lone_packets_cross_vhost_with_python_ints(sock_ctx, zero_copy):
    """An idle panel's path both ways (one descriptor per packet from a copying driver, header
    and frame in two from a zero-copy one): ``rx_one`` hands over a lone packet, leaves a run
    to ``rx_burst``; ``tx_one`` fills the driver's next receive buffer without ``tx_burst``."""
    sock_ctx.options["virtio_user:12:zero_copy"] = zero_copy
    pool = sock_ctx.pool
    with connected_pair(sock_ctx, 12) as (vhost, vuser):
        assert vhost.rx_one() == NOTHING
        lone_packets_arrive(vuser, vhost)
        assert vhost.rx_one() == NOTHING
        runs_go_to_rx_burst(vuser, vhost)
        vhost.tx_burst = no_burst  # type: ignore[method-assign]
        for f in LONE_FRAMES:
            assert vhost.tx_one(int(pool.alloc_frames([f])[0])) == 1
            assert [g for g, _ in receive(vuser, 1)] == [f]
        del vhost.tx_burst
        # (a lone packet is counted by whoever forwards it, forward_one: nothing was dropped)
        assert vhost.info()["errors"] == vuser.info()["errors"] == 0
        assert int(vhost.counters[RX_DROP]) == int(vhost.counters[TX_DROP]) == 0


def test_a_lone_packet_with_nonsense_metadata_is_dropped_and_counted(sock_ctx):
    pool = sock_ctx.pool
    with connected_pair(sock_ctx, 13) as (vhost, vuser):
        bad, good = pool.alloc_frames(mixed_frames(2, seed=6))
        set_vnet(pool, int(bad), 0x40, 0, 0, 0, 0, 0)  # an unknown flag
        assert vuser.driver.tx_burst(pool, np.array([bad], np.uint32)) == 1  # raw: as it is
        wait_for(lambda: vhost.rx_one() == NOTHING and vhost.xstats[XS["rx_bad_vnet"]] == 1, 10, "the drop")
        assert int(vhost.counters[RX_DROP]) == 1
        assert vuser.driver.tx_burst(pool, np.array([good], np.uint32)) == 1
        b = rx_one_within(vhost)
        assert pool.read(b) == mixed_frames(2, seed=6)[1]
        pool.free_one(b)


def test_a_lone_packet_to_a_driver_without_receive_buffers_is_refused(sock_ctx):
    """tx_one with no receive buffer posted: 0, the caller's to free and count; once the driver
    posts buffers again, lone packets go."""
    pool = sock_ctx.pool
    with connected_pair(sock_ctx, 14) as (vhost, vuser):
        frame = mixed_frames(1, seed=7)[0]
        taken = 0
        while True:  # fill every buffer the driver posted, without it taking any back
            b = int(pool.alloc_frames([frame])[0])
            if not vhost.tx_one(b):
                pool.free_one(b)
                break
            taken += 1
            assert taken <= 8192, "the driver's receive ring never filled"
        assert taken >= 256
        assert len(receive(vuser, taken)) == taken
        assert vhost.tx_one(int(pool.alloc_frames([frame])[0])) == 1
        assert [f for f, _ in receive(vuser, 1)] == [frame]


@ZERO_COPY
def test_lone_packets_cross_virtio_user_with_python_ints(sock_ctx, zero_copy):
    """The driver's side of the idle panel's path (copying driver; a zero-copy one leaves lone
    packets to its burst path): ``rx_one`` takes a lone packet from its slot, ``tx_one`` sends
    one without ``tx_burst``, and the transmit descriptors come back round the ring."""
    sock_ctx.options["virtio_user:15:zero_copy"] = zero_copy
    sock_ctx.options["virtio_user:15:queue_size"] = "256"
    copying = zero_copy == "0"
    idle = NOTHING if copying else SOME  # (zero-copy: always the burst path's)
    pool = sock_ctx.pool
    with connected_pair(sock_ctx, 15) as (vhost, vuser):
        assert vuser.rx_one() == idle
        lone_packets_arrive(vhost, vuser, lone=copying)
        assert vuser.rx_one() == idle
        runs_go_to_rx_burst(vhost, vuser, idle)
        if copying:
            vuser.tx_burst = no_burst  # type: ignore[method-assign]
        for k in range(600):  # more than the ring's 256 descriptors: each must come back
            f = LONE_FRAMES[k % len(LONE_FRAMES)]
            assert vuser.tx_one(int(pool.alloc_frames([f])[0])) == 1, k
            assert [g for g, _ in receive(vhost, 1)] == [f]
        if copying:
            del vuser.tx_burst
        assert vhost.info()["errors"] == vuser.info()["errors"] == 0
        assert int(vuser.counters[RX_DROP]) == int(vuser.counters[TX_DROP]) == 0
