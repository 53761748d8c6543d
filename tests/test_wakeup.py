"""Idle workers sleep and are woken by events: ring doorbells across processes, and phy ports'
per-frame readiness. Each worker here runs without its safety-net timer (``backstop=None``), so
a packet that arrives proves that something woke the worker; CPU time comes from /proc."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

import numpy as np
import pytest

from spp.engine import doorbell
from spp.engine.classifier import UNTAGGED, ClassifierTable, Entry
from spp.engine.components import (
    C_DROP,
    C_TX_DROP,
    NO_VLAN,
    ClassifierStep,
    ForwardStep,
    MergeStep,
    MirrorStep,
    PortEnd,
)
from spp.engine.doorbell import ASLEEP, NO_BELL
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId
from spp.engine.ports import phy as phy_module
from spp.engine.ports.base import RX, RX_BYTES, TX, TX_BYTES, TX_DROP, Port, PortContext
from spp.engine.ports.phy import IDLE, TO_BUSY, TO_IDLE, PhyPort
from spp.engine.ports.ring import RingPort
from spp.engine.ports.switcher import SWITCHER, PendingSwitch
from spp.engine.ring import Ring
from spp.engine.shm import PhyInfo, Segment
from spp.engine.worker import Route, Worker
from spp.tools.l2fwd import Rewrite, RewriteRoute
from tests.netutil import VethNs, frame_seq, is_root, make_frame, veth_pair_in_netns, wait_until

pytestmark = pytest.mark.skipif(not doorbell.AVAILABLE, reason="libatomic missing: rings are polled")


def thread_cpu_seconds(thread: threading.Thread) -> float:
    with open(f"/proc/self/task/{thread.native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _producer(prefix: str, ring_id: int, todo: mp.Queue, done: mp.Queue, one_at_a_time: bool = False) -> None:
    """Another process: enqueue the number of frames asked for, each time it is asked, as one
    burst or one index at a time (Ring.put_one, a lone packet's path)."""
    seg = Segment.attach(prefix)
    pool, ring = BufferPool(seg), Ring(seg, ring_id)
    while (n := todo.get()) is not None:
        if one_at_a_time:
            for _ in range(n):
                b = pool.alloc_one()
                pool.lengths[b] = 60 + b % 1000
                assert ring.put_one(b)
        else:
            assert ring.enqueue(pool.alloc(n)) == n
        done.put(n)
    ring.close()
    pool.close()


@contextlib.contextmanager
def producer(segment: Segment, one_at_a_time: bool = False) -> Iterator[Callable[[Ring, int, int], None]]:
    """A :func:`_producer` process on ring:0; yields ``send(src, round_, n)``, which has it
    enqueue ``n`` frames and waits until it did. Half the rounds (the even ones) first wait until
    the worker has announced its sleep; the others send while it may be anywhere between its
    last pass and poll(): the racy window."""
    ctx = mp.get_context("fork")
    todo, done = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_producer, args=(segment.spec.prefix, 0, todo, done, one_at_a_time))
    proc.start()

    def send(src: Ring, round_: int, n: int) -> None:
        if round_ % 2 == 0:
            assert wait_until(lambda: asleep(src), 5), "the idle worker never went to sleep"
        todo.put(n)
        done.get(timeout=5)

    try:
        yield send
    finally:
        todo.put(None)
        proc.join(10)
    assert proc.exitcode == 0


@pytest.fixture
def ring_worker(segment: Segment) -> Iterator[tuple[Worker, Ring]]:
    """A worker forwarding ring:0 -> ring:1 with no timer at all; yields it and ring:1."""
    pool = BufferPool(segment)
    ctx = PortContext(seg=segment, pool=pool, client_id=1)
    src, dst = RingPort(PortId("ring", 0), ctx), RingPort(PortId("ring", 1), ctx)
    worker = Worker(pool, backstop=None)
    worker.start()
    worker.publish([Route(src, dst)])
    out = Ring(segment, 1)
    yield worker, out
    worker.stop()
    src.close()
    dst.close()
    pool.close()


def asleep(ring: Ring) -> bool:
    return bool(ring._ctl.item(ASLEEP))


def test_a_ring_producer_in_another_process_wakes_the_idle_worker(segment, ring_worker):
    _worker, out = ring_worker
    src = Ring(segment, 0)
    with producer(segment) as send, contextlib.closing(BufferPool(segment)) as drain:
        for round_ in range(40):
            send(src, round_, 3)
            assert wait_until(lambda: len(out) >= 3, 5), f"round {round_}: frames left in ring:0"
            drain.free(out.dequeue(3))
        assert len(src) == 0


def test_a_ring_whose_producer_cannot_ring_is_polled_instead(segment):
    """A producer that may not take the consumer's eventfd marks the ring NO_BELL; the worker
    then sleeps on a timer for that ring and the frames still arrive."""
    src = Ring(segment, 0)
    src._ctl[NO_BELL] = 1
    pool = BufferPool(segment)
    ctx = PortContext(seg=segment, pool=pool, client_id=1)
    a, b = RingPort(PortId("ring", 0), ctx), RingPort(PortId("ring", 1), ctx)
    worker = Worker(pool, backstop=None)
    worker.start()
    worker.publish([Route(a, b)])
    out = Ring(segment, 1)
    mine = BufferPool(segment)
    try:
        time.sleep(0.1)
        assert not asleep(src)  # nothing announced: nobody would ring
        assert src.enqueue(mine.alloc(2)) == 2
        assert wait_until(lambda: len(out) == 2, 5)
        mine.free(out.dequeue(2))
    finally:
        worker.stop()
        mine.close()
        pool.close()


def test_an_idle_ring_worker_uses_almost_no_cpu(ring_worker):
    worker, _out = ring_worker
    time.sleep(0.3)
    c0 = thread_cpu_seconds(worker)
    time.sleep(3)
    used = thread_cpu_seconds(worker) - c0
    assert used < 0.06, f"idle worker used {used:.3f} s of CPU in 3 s"


# -- phy ------------------------------------------------------------------------------------------


@pytest.fixture
def veth() -> Iterator[VethNs]:
    if not is_root():
        pytest.skip("needs root: creates network namespaces and veth pairs")
    with veth_pair_in_netns() as v:
        yield v


def test_a_lone_frame_wakes_an_idle_phy_worker_and_arrives(make_segment, veth):
    seg = make_segment(phys=[PhyInfo(iface=veth.host_if)])
    pool = BufferPool(seg)
    ctx = PortContext(seg=seg, pool=pool, client_id=1)
    phy, ring = PhyPort(PortId("phy", 0), ctx), RingPort(PortId("ring", 1), ctx)
    worker = Worker(pool, backstop=None)
    worker.start()
    worker.publish([Route(phy, ring)])
    out = Ring(seg, 1)
    drain = BufferPool(seg)
    try:
        for i in range(5):
            assert wait_until(lambda: phy._mode == IDLE, 5), "the port never switched to per-frame readiness"
            frame = make_frame(i, 80)
            veth.send([frame])
            assert wait_until(lambda: len(out) == 1, 5), f"frame {i} never arrived"
            got = out.dequeue(1)
            assert drain.read(int(got[0])) == frame
            drain.free(got)
        time.sleep(0.3)
        c0 = thread_cpu_seconds(worker)
        time.sleep(3)
        used = thread_cpu_seconds(worker) - c0
        assert used < 0.06, f"idle phy worker used {used:.3f} s of CPU in 3 s"
    finally:
        worker.stop()
        phy.close()
        ring.close()
        drain.close()
        pool.close()


def test_a_burst_after_idling_switches_back_to_blocks_and_keeps_order(make_segment, veth, monkeypatch):
    """From per-frame readiness back to the ring's blocks mid-burst: every frame, in order."""
    monkeypatch.setattr(phy_module, "IDLE_MAX_PER_MS", 256)  # a burst this host can send switches
    seg = make_segment(phys=[PhyInfo(iface=veth.host_if)], nb_bufs=16384, ring_size=4096)
    pool = BufferPool(seg)
    ctx = PortContext(seg=seg, pool=pool, client_id=1)
    phy, ring = PhyPort(PortId("phy", 0), ctx), RingPort(PortId("ring", 1), ctx)
    worker = Worker(pool, backstop=None)
    worker.start()
    worker.publish([Route(phy, ring)])
    out = Ring(seg, 1)
    drain = BufferPool(seg)
    seqs: list[int] = []
    try:
        assert wait_until(lambda: phy._mode == IDLE, 5)
        frames = [make_frame(i, 60 + i % 200) for i in range(3000)]

        def collect() -> bool:
            got = out.dequeue(1024)
            seqs.extend(frame_seq(drain.read(int(b))) for b in got.tolist())
            drain.free(got)
            return len(seqs) >= len(frames)

        veth.send(frames)
        assert wait_until(collect, 20), f"{len(seqs)} of {len(frames)} frames arrived"
        assert seqs == sorted(seqs) == list(range(len(frames)))
    finally:
        worker.stop()
        phy.close()
        ring.close()
        drain.close()
        pool.close()


def hold_switcher() -> tuple[threading.Event, threading.Event]:
    """Queue a job that keeps the process's fanout switcher busy until the first returned event
    is set (the second is set once it holds it): a switch asked for meanwhile waits behind it, as
    one waiting out a long RCU grace period would."""
    gate, holding = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        gate.wait(30)

    SWITCHER.submit(hold)
    return gate, holding


def test_the_worker_forwards_during_a_mode_switch_and_keeps_order(make_segment, veth, monkeypatch):
    """The fanout switch (a setsockopt that waits out an RCU grace period) runs on a helper
    thread: while it is held back, the worker goes on forwarding another route and the phy
    port's frames from the socket that has them, in order, both ways (to blocks and back)."""
    # A burst the test's one-send-per-frame sender surely reaches switches to blocks.
    monkeypatch.setattr(phy_module, "IDLE_MAX_PER_MS", 8)
    seg = make_segment(phys=[PhyInfo(iface=veth.host_if)], nb_bufs=16384, ring_size=4096)
    pool = BufferPool(seg)
    ctx = PortContext(seg=seg, pool=pool, client_id=1)
    phy, out_port = PhyPort(PortId("phy", 0), ctx), RingPort(PortId("ring", 1), ctx)
    other_in, other_out = RingPort(PortId("ring", 2), ctx), RingPort(PortId("ring", 3), ctx)
    worker = Worker(pool, backstop=None)
    worker.start()
    worker.publish([Route(phy, out_port), Route(other_in, other_out)])
    out, feed, fed = Ring(seg, 1), Ring(seg, 2), Ring(seg, 3)
    drain = BufferPool(seg)
    seqs: list[int] = []
    gate = gate2 = threading.Event()

    def collect(total: int) -> bool:
        got = out.dequeue(1024)
        seqs.extend(frame_seq(drain.read(int(b))) for b in got.tolist())
        drain.free(got)
        return len(seqs) >= total

    def other_route_moves() -> None:
        """The worker's other route is served meanwhile."""
        assert feed.enqueue(drain.alloc(8)) == 8
        assert wait_until(lambda: len(fed) == 8, 5), "the other route stalled during the switch"
        drain.free(fed.dequeue(8))

    try:
        assert wait_until(lambda: phy._mode == IDLE, 5)
        # A burst: the port asks to go back to blocks, and that switch is held back.
        gate, holding = hold_switcher()
        assert holding.wait(5)
        frames = [make_frame(i, 60 + i % 200) for i in range(3000)]
        veth.send(frames)
        assert wait_until(lambda: collect(3000), 20), f"{len(seqs)} of 3000 frames arrived during the switch"
        assert phy._mode == TO_BUSY, "the switch is still under way"
        other_route_moves()
        # Queued behind the port's switch: once on blocks and idle again, the port's switch to
        # the ringless socket is held back in turn.
        gate2, holding2 = hold_switcher()
        gate.set()
        assert holding2.wait(5), "the switch to blocks completed"
        gate = gate2
        assert wait_until(lambda: phy._mode == TO_IDLE, 5), "idle on blocks, the worker asked to switch"
        lone = [make_frame(3000 + i, 80) for i in range(5)]
        for i, frame in enumerate(lone):
            veth.send([frame])
            assert wait_until(lambda n=3001 + i: collect(n), 5), "a lone frame waited for the switch"
        assert phy._mode == TO_IDLE
        other_route_moves()
        gate.set()
        assert wait_until(lambda: phy._mode == IDLE, 5)
        veth.send([make_frame(3005, 80)])
        assert wait_until(lambda: collect(3006), 5)
        assert seqs == list(range(3006)), "every frame, in wire order, across both switches"
    finally:
        gate.set()
        gate2.set()
        worker.stop()
        for port in (phy, out_port, other_in, other_out):
            port.close()
        drain.close()
        pool.close()


def test_an_idle_phy_to_phy_worker_relays_lone_frames_unchanged(make_segment) -> None:
    """phy:0 -> phy:1 while idle: lone frames (plain, VLAN-tagged, jumbo) go from the ringless
    socket straight to the other port (no pool buffer), byte for byte, and are counted."""
    if not is_root():
        pytest.skip("needs root: creates network namespaces and veth pairs")
    with veth_pair_in_netns(mtu=9000) as a, veth_pair_in_netns(mtu=9000) as b:
        seg = make_segment(phys=[PhyInfo(iface=a.host_if), PhyInfo(iface=b.host_if)])
        pool = BufferPool(seg)
        ctx = PortContext(seg=seg, pool=pool, client_id=1)
        p0, p1 = PhyPort(PortId("phy", 0), ctx), PhyPort(PortId("phy", 1), ctx)
        step = p0.route_to(p1)
        assert step is not None
        worker = Worker(pool, backstop=None)
        worker.start()
        worker.publish([step])
        frames = [
            make_frame(0, 60),
            make_frame(1, 1514, vlan=(0x8100, 42)),
            make_frame(2, 90, vlan=(0x88A8, 9, 0x8100, 10)),
            make_frame(3, 8000),
        ]
        # (the worker's handle: read while the worker does not use the pool, as the relay does not)
        free_before = pool.shared_free + pool._cached
        try:
            for frame in frames:
                assert wait_until(lambda: p0._mode == IDLE, 5), "the port never went idle"
                cap = b.capture(1)
                a.send([frame])
                assert cap.frames() == [frame]
            assert p0._relayed, "the idle path relayed the frames"
            assert int(p0.counters[RX]) == int(p1.counters[TX]) == len(frames)
            nbytes = sum(len(f) for f in frames)
            assert int(p0.counters[RX_BYTES]) == int(p1.counters[TX_BYTES]) == nbytes
            assert int(p1.counters[TX_DROP]) == 0
            assert pool.shared_free + pool._cached == free_before, "no pool buffer was taken"
        finally:
            worker.stop()
            p0.close()
            p1.close()
            pool.close()


def test_a_lone_packet_wakes_the_idle_worker_and_is_counted_and_dropped_as_a_burst_is(segment, ring_worker):
    """A producer that puts single indices (put_one) rings the doorbell of a sleeping worker; the
    worker moves each lone packet with rx_one/tx_one and counts packets and bytes on both ports
    exactly; when ring:1 is full, the packet is freed and counted as ring:1's tx_drop."""
    worker, out = ring_worker
    route = worker._pending[1][0]
    move_lone_packets(segment, worker, out, route.src, route.dst)


class BurstCountingRing(RingPort):
    """ring:N that counts its rx_burst calls (a lone packet should need none)."""

    bursts = 0

    def rx_burst(self, max_n: int) -> np.ndarray:
        self.bursts += 1
        return super().rx_burst(max_n)


@pytest.mark.parametrize("kind", ["forward", "merge"])
def test_vf_components_move_lone_packets_without_bursts(segment, kind):
    """spp_vf's forward and merge components take the lone path too: each lone packet is moved
    without an rx_burst, and counted on the ports and in the component's counters as a burst of
    one would be, a refused one as the component's tx_drop."""
    pool = BufferPool(segment)
    ctx = PortContext(seg=segment, pool=pool, client_id=1)
    src, dst = BurstCountingRing(PortId("ring", 0), ctx), RingPort(PortId("ring", 1), ctx)
    ctr = np.zeros(4, np.uint64)
    rx, tx = PortEnd(src, NO_VLAN, pool), PortEnd(dst, NO_VLAN, pool)
    step = ForwardStep(rx, tx, ctr) if kind == "forward" else MergeStep((rx,), tx, ctr)
    worker = Worker(pool, backstop=None)
    worker.start()
    try:
        worker.publish([step])
        move_lone_packets(segment, worker, Ring(segment, 1), src, dst)
        assert src.bursts == 0
        assert [int(x) for x in ctr] == [21, 20, 1, 0]  # rx, tx, tx_drop, drop
    finally:
        worker.stop()
        src.close()
        dst.close()
        pool.close()


def move_lone_packets(segment: Segment, worker: Worker, out: Ring, src_port: Port, dst_port: Port) -> None:
    """20 lone packets from a producer process through ``worker`` (ring:0 -> ring:1), one at a
    time with the worker asleep in between, then one more into a full ring:1."""
    src = Ring(segment, 0)
    nbytes = 0
    with producer(segment, one_at_a_time=True) as send, contextlib.closing(BufferPool(segment)) as drain:
        for round_ in range(20):
            send(src, round_, 1)
            assert wait_until(lambda: len(out) == 1, 5), f"round {round_}: the lone packet stayed"
            b = out.take_one()
            nbytes += int(drain.lengths[b])
            drain.free_one(b)
        assert int(src_port.counters[RX]) == int(dst_port.counters[TX]) == 20
        assert int(src_port.counters[RX_BYTES]) == int(dst_port.counters[TX_BYTES]) == nbytes
        # ring:1 full: the next lone packet is dropped, counted and its buffer freed
        filler = drain.alloc(out.size)
        assert out.enqueue(filler) == out.size
        free_before = segment.pool_ctl[0] + drain._cached
        send(src, 1, 1)
        assert wait_until(lambda: int(dst_port.counters[TX_DROP]) == 1, 5)
        assert len(src) == 0 and int(src_port.counters[RX]) == 21 and int(dst_port.counters[TX]) == 20
        drain.free(out.dequeue(out.size))
        assert wait_until(lambda: asleep(src), 5)  # idle again: its pool handle is ours to flush
        worker.pool.flush()
        drain.flush()
        # ring:1's filler back, and the dropped packet's buffer (from the producer's cache)
        assert segment.pool_ctl[0] == free_before + out.size + 1, "the dropped buffer was freed"


def test_whoever_sees_a_switch_done_finds_its_eventfd_written() -> None:
    """The fanout helper writes the port's eventfd before it says the switch is done, so the
    worker, which reads the eventfd when it sees ``done``, always empties it. The other order
    left, now and then, the eventfd readable after that read: the idle worker, whose poll set
    holds it, span at 100 % CPU (seen once in a latency benchmark). Here the helper pauses
    between every two lines of its job, so the watcher sees each state it goes through."""

    def pause_each_line(frame: FrameType, event: str, arg: object) -> Callable[..., object] | None:
        if frame.f_code is not PendingSwitch.run.__code__:
            return None

        def line(frame: FrameType, event: str, arg: object) -> Callable[..., object]:
            if event == "line":
                time.sleep(0.002)
            return line

        return line

    wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    switch = PendingSwitch()
    threading.settrace(pause_each_line)
    try:
        # fd -1: the real setsockopt fails at once with EBADF; the helper ends the same way
        helper = threading.Thread(target=switch.run, args=(-1, b"", wake_fd))
        helper.start()
    finally:
        threading.settrace(None)  # (for threads started later)
    try:
        while not switch.done:
            time.sleep(0.0001)
        readable = select.poll()
        readable.register(wake_fd, select.POLLIN)
        assert readable.poll(0), "done, but the eventfd is not written yet"
        helper.join()
        assert os.eventfd_read(wake_fd) == 1
    finally:
        os.close(wake_fd)


@contextlib.contextmanager
def ring_component(
    segment: Segment, build: Callable[[PortEnd, tuple[PortEnd, ...], np.ndarray, BufferPool], object]
) -> Iterator[tuple[BurstCountingRing, list[RingPort], np.ndarray, BufferPool, list[Ring]]]:
    """ring:0 -> the component ``build(rx, (tx ring:1, tx ring:2), counters, pool)`` makes, run
    by a worker of its own; yields (ring:0's port, the tx ports, the component's counters, a
    pool handle to feed and drain with, rings 0-2)."""
    pool = BufferPool(segment)
    ctx = PortContext(seg=segment, pool=pool, client_id=1)
    src = BurstCountingRing(PortId("ring", 0), ctx)
    outs = [RingPort(PortId("ring", n), ctx) for n in (1, 2)]
    ctr = np.zeros(4, np.uint64)
    step = build(PortEnd(src, NO_VLAN, pool), tuple(PortEnd(o, NO_VLAN, pool) for o in outs), ctr, pool)
    worker = Worker(pool, backstop=None)
    worker.start()
    feeder = BufferPool(segment)
    try:
        worker.publish([step])  # type: ignore[list-item]
        yield src, outs, ctr, feeder, [Ring(segment, n) for n in (0, 1, 2)]
    finally:
        worker.stop()
        for p in (src, *outs):
            p.close()
        feeder.close()
        pool.close()


def feed_lone(rings: list[Ring], feeder: BufferPool, frame: bytes, seen: tuple[int, int]) -> list[bytes]:
    """Put ``frame`` alone on ``rings[0]`` once its consumer sleeps; once ``rings[1]`` and
    ``rings[2]`` hold ``seen`` frames, take them (and free their buffers)."""
    assert wait_until(lambda: asleep(rings[0]), 5), "the idle worker never went to sleep"
    b = feeder.alloc_one()
    feeder.write(b, frame)
    assert rings[0].put_one(b)
    assert wait_until(lambda: (len(rings[1]), len(rings[2])) == seen, 5), (len(rings[1]), len(rings[2]))
    got = []
    for r in rings[1:]:
        while len(r):
            x = r.take_one()
            got.append(feeder.read(x))
            feeder.free_one(x)
    return got


def test_the_classifier_sends_a_lone_frame_to_its_mac_without_a_burst(segment):
    """An untagged lone frame to a MAC of the table goes to its port without an rx_burst; any
    other lone frame (unknown unicast, broadcast, tagged) is classified as a burst of one, with
    the table's usual outcome. Counters as for bursts."""
    mac = {"a": b"\x02\x00\x00\x00\x00\x0a", "b": b"\x02\x00\x00\x00\x00\x0b"}
    table = ClassifierTable(
        [(0, Entry(UNTAGGED, int(mac["a"].hex(), 16))), (1, Entry(UNTAGGED, int(mac["b"].hex(), 16)))]
    )
    classifier = lambda rx, txs, ctr, pool: ClassifierStep(rx, txs, table, ctr, pool)  # noqa: E731
    with ring_component(segment, classifier) as (src, outs, ctr, feeder, rings):
        lone = functools.partial(feed_lone, rings, feeder)
        to_a, to_b = make_frame(1, 60, dst=mac["a"]), make_frame(2, 98, dst=mac["b"])
        assert lone(to_a, (1, 0)) == [to_a]
        assert lone(to_b, (0, 1)) == [to_b]
        assert src.bursts == 0  # both took the lone path
        assert [int(x) for x in ctr] == [2, 2, 0, 0]
        assert int(outs[0].counters[TX_BYTES]) == 60 and int(outs[1].counters[TX_BYTES]) == 98
        # unknown unicast: no default, dropped; broadcast: flooded to both
        unknown = make_frame(3, 60, dst=b"\x02\x00\x00\x00\x00\x0c")
        assert lone(unknown, (0, 0)) == [] and wait_until(lambda: int(ctr[C_DROP]) == 1, 5)
        flood = make_frame(4, 60, dst=b"\xff" * 6)
        assert lone(flood, (1, 1)) == [flood, flood]
        tagged = make_frame(5, 64, dst=mac["a"], vlan=(0x8100, 7))
        assert lone(tagged, (0, 0)) == [] and wait_until(lambda: int(ctr[C_DROP]) == 2, 5)  # no VID 7 table
        assert [int(x) for x in ctr] == [5, 4, 0, 2]
        assert int(src.counters[RX]) == 5


def test_the_mirror_copies_a_lone_frame_without_a_burst(segment):
    """A lone frame goes to the first tx port and a deep copy of it (a buffer of its own, bytes,
    length, stamp and offload metadata) to the second, without an rx_burst; a copy the second
    port refuses is freed and counted as the component's tx_drop, the original still goes."""
    mirror = lambda rx, txs, ctr, pool: MirrorStep(rx, *txs, ctr, pool)  # noqa: E731
    with ring_component(segment, mirror) as (src, outs, ctr, feeder, rings):
        for seq in range(5):
            frame = make_frame(seq, 60 + 300 * seq)
            assert feed_lone(rings, feeder, frame, (1, 1)) == [frame, frame]
        assert src.bursts == 0
        assert [int(x) for x in ctr] == [5, 10, 0, 0]
        # the copy's metadata is the original's
        b = feeder.alloc_one()
        feeder.write(b, make_frame(9, 80))
        feeder.stamps[b] = 123456789
        feeder.vnet[b] = np.arange(1, 11, dtype=np.uint8)
        c = feeder.copy_one(b)
        assert c not in (b, -1) and feeder.read(c) == feeder.read(b)
        assert int(feeder.stamps[c]) == 123456789 and feeder.vnet[c].tolist() == list(range(1, 11))
        feeder.free_one(b)
        feeder.free_one(c)
        # ring:2 full: the copy is refused (and freed), the original still reaches ring:1
        filler = feeder.alloc(rings[2].size)
        assert rings[2].enqueue(filler) == rings[2].size
        frame = make_frame(7, 60)
        assert wait_until(lambda: asleep(rings[0]), 5)
        b = feeder.alloc_one()
        feeder.write(b, frame)
        assert rings[0].put_one(b)
        assert wait_until(lambda: len(rings[1]) == 1, 5)
        assert wait_until(lambda: int(ctr[C_TX_DROP]) == 1, 5)
        assert [int(x) for x in ctr] == [6, 11, 1, 0] and int(outs[1].counters[TX_DROP]) == 1
        x = rings[1].take_one()
        assert feeder.read(x) == frame
        feeder.free_one(x)
        feeder.free(rings[2].dequeue(rings[2].size))


MAC_A, MAC_B = bytes.fromhex("0a0b0c0d0e0f"), bytes.fromhex("021122334455")


@pytest.mark.parametrize(
    ("rewrite", "expect"),
    [
        (Rewrite(), lambda f: f),
        (Rewrite(swap=True), lambda f: f[6:12] + f[0:6] + f[12:]),
        (
            Rewrite(dst=np.frombuffer(MAC_A, np.uint8), src=np.frombuffer(MAC_B, np.uint8)),
            lambda f: MAC_A + MAC_B + f[12:],
        ),
        (Rewrite(dst=np.frombuffer(MAC_A, np.uint8), swap=True), lambda f: MAC_A + f[0:6] + f[12:]),
    ],
    ids=["plain", "swap", "dst-src", "swap-dst"],
)
def test_l2fwd_rewrites_a_lone_frame_without_a_burst(segment, rewrite, expect):
    """spp-l2fwd (a container's VNF) takes the lone path too, with the same MAC rewrite as its
    burst path (swap, then destination, then source)."""

    def build(rx: PortEnd, txs: tuple[PortEnd, ...], ctr: np.ndarray, pool: BufferPool) -> RewriteRoute:
        return RewriteRoute(rx.port, txs[0].port, rewrite)

    with ring_component(segment, build) as (src, outs, _ctr, feeder, rings):
        frames = [make_frame(i, 64 + i) for i in range(3)]
        for f in frames:
            assert feed_lone(rings, feeder, f, (1, 0)) == [expect(f)]
        assert src.bursts == 0
        assert int(src.counters[RX]) == int(outs[0].counters[TX]) == 3
