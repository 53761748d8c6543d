"""spp_vf's components running in real worker threads of this process, fed and drained through
shared rings: classification by MAC and VLAN, flooding, VLAN ops on ports, merge order, run
conditions, refused changes, and re-wiring under traffic."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from spp.engine.classifier import UNTAGGED, Entry, parse_mac
from spp.engine.components import (
    C_DROP,
    C_RX,
    C_TX,
    C_TX_DROP,
    VF_KINDS,
    ComponentManager,
    ConfigError,
)
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId
from spp.engine.ring import Ring
from spp.engine.vlan import ADD, DEL, VlanOp
from tests.netutil import make_frame

MAC_A, MAC_B, MAC_C = (bytes.fromhex(h) for h in ("525400123456", "525400123458", "52540012345a"))
BCAST = b"\xff" * 6
UNKNOWN = bytes.fromhex("020000000099")


def ring(n: int) -> PortId:
    return PortId("ring", n)


def tag(vid: int, pcp: int = 0) -> tuple[int, int]:
    return (0x8100, (pcp << 13) | vid)


def entry(mac: bytes | None, vid: int = UNTAGGED) -> Entry:
    return Entry(vid, None if mac is None else int.from_bytes(mac, "big"))


@pytest.fixture
def seg(make_segment):
    return make_segment(nb_rings=8, nb_bufs=16384)


@pytest.fixture
def mgr(seg):
    m = ComponentManager(seg, 1, [0, 1, 2], VF_KINDS)
    yield m
    m.close()


class Wire:
    """The test's side of the rings: its own pool handle, a producer and a consumer."""

    def __init__(self, seg) -> None:
        self.seg = seg
        self.pool = BufferPool(seg)

    def push(self, n: int, frames: list[bytes]) -> None:
        bufs = self.pool.alloc_frames(frames)
        assert Ring(self.seg, n).enqueue(bufs) == len(bufs)

    def take(self, n: int, count: int, timeout: float = 3.0) -> list[bytes]:
        """``count`` frames from ring ``n`` (fewer after ``timeout``); waits a little for extras."""
        r, out = Ring(self.seg, n), []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            bufs = r.dequeue(1024)
            out += [self.pool.read(int(b)) for b in bufs]
            self.pool.free(bufs)
            if not len(bufs):
                time.sleep(0.002)
        time.sleep(0.05)
        bufs = r.dequeue(1024)
        out += [self.pool.read(int(b)) for b in bufs]
        self.pool.free(bufs)
        return out


@pytest.fixture
def wire(seg):
    w = Wire(seg)
    yield w
    w.pool.close()


def classifier(mgr: ComponentManager, rx: int = 0, txs: tuple[int, ...] = (1, 2, 3), lcore: int = 1) -> None:
    mgr.start_component("cls", lcore, "classifier")
    mgr.attach(ring(rx), "rx", "cls", None)
    for t in txs:
        mgr.attach(ring(t), "tx", "cls", None)


def test_frames_leave_on_the_ports_the_table_says(mgr, wire):
    classifier(mgr)
    mgr.add_entry(entry(MAC_A), ring(1))
    mgr.add_entry(entry(MAC_B, 101), ring(2))
    mgr.add_entry(entry(None), ring(3))  # general default
    frames = [
        make_frame(0, 64, dst=MAC_A),
        make_frame(1, 100, dst=MAC_B, vlan=tag(101, 3)),
        make_frame(2, 64, dst=UNKNOWN),
        make_frame(3, 1514, dst=MAC_A),
        make_frame(4, 70, dst=MAC_A, vlan=tag(101)),  # unknown in VID 101 -> general default
        make_frame(5, 64, dst=MAC_B),  # MAC_B is known only in VID 101
    ]
    wire.push(0, frames)
    assert wire.take(1, 2) == [frames[0], frames[3]]
    assert wire.take(2, 1) == [frames[1]]
    assert wire.take(3, 3) == [frames[2], frames[4], frames[5]]
    ctr = mgr.counters["cls"]
    assert (int(ctr[C_RX]), int(ctr[C_TX]), int(ctr[C_DROP])) == (6, 6, 0)
    # The process's ring counters (what the primary reports) moved too.
    assert int(mgr.seg.ring_stats[1, 0, 0]) == 6 and int(mgr.seg.ring_stats[1, 1, 2]) == 2


def test_unroutable_frames_are_dropped_and_counted(mgr, wire):
    classifier(mgr, txs=(1,))
    mgr.add_entry(entry(MAC_A), ring(1))
    wire.push(0, [make_frame(i, 64, dst=MAC_A if i % 3 == 0 else UNKNOWN) for i in range(30)])
    assert len(wire.take(1, 10)) == 10
    ctr = mgr.counters["cls"]
    assert (int(ctr[C_RX]), int(ctr[C_TX]), int(ctr[C_DROP])) == (30, 10, 20)
    info = mgr.status(True)
    assert info["core"][0]["counters"] == {"rx": 30, "tx": 10, "tx_drop": 0, "drop": 20}


def test_broadcast_floods_every_port_of_the_vlan_with_independent_copies(mgr, wire, seg):
    classifier(mgr, txs=(1, 2, 3, 4))
    mgr.add_entry(entry(MAC_A), ring(1))
    mgr.add_entry(entry(None), ring(2))
    mgr.add_entry(entry(MAC_B, 5), ring(3))
    mgr.add_entry(entry(None, 6), ring(4))
    frames = [
        make_frame(0, 64, dst=BCAST),  # untagged: ring:1 and ring:2 (the general default)
        make_frame(1, 64, dst=MAC_A),
        make_frame(2, 90, dst=BCAST, vlan=tag(5)),  # VID 5: ring:3 and the general default
        make_frame(3, 64, dst=bytes.fromhex("01005e000001"), vlan=tag(6)),  # VID 6: ring:4, ring:2
        make_frame(4, 64, dst=BCAST, vlan=tag(7)),  # no table for VID 7: general default only
    ]
    wire.push(0, frames)
    r1 = Ring(seg, 1)
    deadline = time.monotonic() + 3
    while len(r1) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    bufs1 = r1.dequeue(10)
    bufs2 = Ring(seg, 2).dequeue(10)
    assert [wire.pool.read(int(b)) for b in bufs1] == [frames[0], frames[1]]
    assert [wire.pool.read(int(b)) for b in bufs2] == [frames[0], frames[2], frames[3], frames[4]]
    # The copies are buffers of their own: scribbling on one leaves the other as it was.
    assert int(bufs1[0]) != int(bufs2[0])
    wire.pool.data[bufs1[0], :6] = 0
    assert wire.pool.read(int(bufs2[0])) == frames[0]
    wire.pool.free(bufs1)
    wire.pool.free(bufs2)
    assert wire.take(3, 1) == [frames[2]]
    assert wire.take(4, 1) == [frames[3]]
    ctr = mgr.counters["cls"]
    assert (int(ctr[C_RX]), int(ctr[C_TX]), int(ctr[C_DROP])) == (5, 8, 0)


def test_vlan_ops_apply_on_rx_before_classifying_and_on_tx_before_sending(mgr, wire):
    mgr.start_component("cls", 1, "classifier")
    mgr.attach(ring(0), "rx", "cls", VlanOp(DEL))  # strip: every frame is classified as untagged
    mgr.attach(ring(1), "tx", "cls", VlanOp(ADD, 200, 5))
    mgr.attach(ring(2), "tx", "cls", None)
    mgr.add_entry(entry(MAC_A), ring(1))
    mgr.add_entry(entry(MAC_B), ring(2))
    frames = [
        make_frame(0, 64, dst=MAC_A, vlan=tag(10)),
        make_frame(1, 64, dst=MAC_B, vlan=tag(11)),
        make_frame(2, 300, dst=MAC_A),
    ]
    wire.push(0, frames)
    pushed = bytes.fromhex("8100a0c8")  # TCI: PCP 5, VID 200
    assert wire.take(1, 2) == [_tagged(_untag(frames[0]), pushed), _tagged(frames[2], pushed)]
    assert wire.take(2, 1) == [_untag(frames[1])]
    # Re-adding the port with a VLAN option changes just its option.
    mgr.attach(ring(1), "tx", "cls", VlanOp(DEL))
    comp = mgr.status(True)["core"][0]
    assert comp["tx_port"][0] == {"port": "ring:1", "vlan": {"operation": "del", "id": 0, "pcp": 0}}
    assert comp["rx_port"][0]["vlan"] == {"operation": "del", "id": 0, "pcp": 0}


def _untag(frame: bytes) -> bytes:
    return frame[:12] + frame[16:]


def _tagged(frame: bytes, tag4: bytes) -> bytes:
    return frame[:12] + tag4 + frame[12:]


def test_forward_and_merge_keep_order_and_run_only_when_complete(mgr, wire, seg):
    mgr.start_component("fwd", 1, "forward")
    mgr.attach(ring(0), "rx", "fwd", None)
    frames = [make_frame(i, 64 + i) for i in range(50)]
    wire.push(0, frames)
    time.sleep(0.1)
    assert len(Ring(seg, 0)) == 50  # a forwarder without a tx port does not touch its rx
    mgr.attach(ring(1), "tx", "fwd", VlanOp(ADD, 7, 0))
    assert wire.take(1, 50) == [_tagged(f, bytes.fromhex("81000007")) for f in frames]

    mgr.start_component("mgr", 2, "merge")
    for n in (2, 3):
        mgr.attach(ring(n), "rx", "mgr", None)
    a = [make_frame(100 + i, 64) for i in range(5)]
    b = [make_frame(200 + i, 64) for i in range(5)]
    wire.push(2, a)
    wire.push(3, b)
    mgr.attach(ring(4), "tx", "mgr", None)
    assert wire.take(4, 10) == a + b  # rx ports polled in the order they were added


def test_refused_changes_leave_the_running_config_untouched(mgr, wire):
    classifier(mgr, txs=(1, 2))
    mgr.add_entry(entry(MAC_A), ring(1))
    mgr.start_component("fwd", 2, "forward")
    mgr.attach(ring(3), "rx", "fwd", None)
    before = mgr.config
    bad = [
        (lambda: mgr.start_component("cls", 2, "forward"), "component name", "already exists"),
        (lambda: mgr.start_component("x", 0, "forward"), "core", "master lcore"),
        (lambda: mgr.start_component("x", 5, "forward"), "core", "not one of this process's lcores"),
        (
            lambda: mgr.attach(ring(0), "rx", "fwd", None),
            "port rxtx",
            "already the rx port of component 'cls'",
        ),
        (lambda: mgr.attach(ring(1), "tx", "fwd", None), "port rxtx", "already the tx port"),
        (lambda: mgr.attach(ring(5), "rx", "fwd", None), None, "takes at most 1 rx port"),
        (lambda: mgr.attach(ring(9), "tx", "fwd", None), "port", "ring:9 does not exist"),
        (lambda: mgr.attach(PortId("memif", 0), "tx", "fwd", None), "port", "not supported"),
        (lambda: mgr.attach(ring(5), "rx", "nope", None), "component name", "no component 'nope'"),
        (lambda: mgr.detach(ring(5), "rx", "cls"), None, "is not a rx port"),
        (lambda: mgr.add_entry(entry(MAC_B), ring(3)), "port", "not a tx port of any classifier"),
        (lambda: mgr.add_entry(entry(MAC_B), ring(1)), None, "a port holds one"),
        (lambda: mgr.add_entry(entry(MAC_A), ring(2)), None, "already in the table of 'cls'"),
        (lambda: mgr.del_entry(entry(MAC_B), ring(1)), None, "no entry 'mac 52:54:00:12:34:58'"),
    ]
    for call, param, text in bad:
        with pytest.raises(ConfigError) as e:
            call()
        assert e.value.param == param and text in e.value.reason, (param, text, e.value.param, e.value.reason)
        assert mgr.config == before
    frames = [make_frame(i, 64, dst=MAC_A) for i in range(20)]
    wire.push(0, frames)
    assert wire.take(1, 20) == frames  # still classifying


def test_stopping_a_classifier_drops_its_entries_and_detaching_a_port_its_entry(mgr):
    classifier(mgr, txs=(1, 2))
    mgr.add_entry(entry(MAC_A), ring(1))
    mgr.add_entry(entry(None, 9), ring(2))
    assert [e["value"] for e in mgr.status(True)["classifier_table"]] == ["52:54:00:12:34:56", "9/default"]
    mgr.detach(ring(2), "tx", "cls")
    assert [e["port"] for e in mgr.status(True)["classifier_table"]] == ["ring:1"]
    mgr.stop_component("cls")
    mgr.stop_component("cls")  # unknown: silent success, as SPP
    info = mgr.status(True)
    assert info["classifier_table"] == []
    assert info["core"] == [{"core": 1, "type": "unuse"}, {"core": 2, "type": "unuse"}]
    assert info["ring"] == ["0", "1", "2"]  # created rings stay listed, as SPP


def test_rewiring_under_traffic_loses_nothing(mgr, seg):
    """A producer and a consumer thread run while the table and the ports change 40 times."""
    classifier(mgr, txs=(1, 2))
    mgr.add_entry(entry(MAC_A), ring(1))
    mgr.add_entry(entry(None), ring(2))
    stop = threading.Event()
    sent = [0]
    received = [0]

    def produce() -> None:
        pool, r = BufferPool(seg), Ring(seg, 0)
        frames = [make_frame(i, 64, dst=(MAC_A, MAC_B, MAC_C)[i % 3]) for i in range(96)]
        template = pool.alloc_frames(frames)
        while not stop.is_set():
            bufs = pool.alloc(96)
            if len(bufs) < 96:
                pool.free(bufs)
                time.sleep(0.001)
                continue
            pool.data[bufs, :64] = pool.data[template, :64]
            pool.lengths[bufs] = 64
            n = r.enqueue(bufs)
            pool.free(bufs[n:])
            sent[0] += n
            time.sleep(0.0002)
        pool.free(template)
        pool.close()

    def consume() -> None:
        pool = BufferPool(seg)
        rings = [Ring(seg, n) for n in (1, 2, 3)]
        while not stop.is_set() or any(len(r) for r in rings):
            for r in rings:
                bufs = r.dequeue(1024)
                received[0] += len(bufs)
                pool.free(bufs)
            time.sleep(0.0005)
        pool.close()

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    try:
        for i in range(40):
            if i % 2 == 0:
                mgr.attach(ring(3), "tx", "cls", None)
                mgr.add_entry(entry(MAC_B), ring(3))
                mgr.del_entry(entry(None), ring(2))
                mgr.add_entry(entry(None), ring(2))
            else:
                mgr.detach(ring(3), "tx", "cls")  # its entry goes with it
            time.sleep(0.005)
    finally:
        time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(10)
    deadline = time.monotonic() + 3
    ctr = mgr.counters["cls"]
    while int(ctr[C_RX]) < sent[0] and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    pool = BufferPool(seg)
    for n in (1, 2, 3):  # what arrived after the consumer had stopped
        bufs = Ring(seg, n).dequeue(4096)
        received[0] += len(bufs)
        pool.free(bufs)
    pool.close()
    rx, tx, tx_drop, drop = (int(ctr[c]) for c in (C_RX, C_TX, C_TX_DROP, C_DROP))
    assert rx == sent[0] > 1000
    # The only drops are frames sent while no entry existed for them (the default was being
    # replaced); everything else arrived.
    assert rx == tx + tx_drop + drop
    assert received[0] == tx
    assert drop < rx // 10


def test_pool_handles_are_flushed_on_close(seg):
    m = ComponentManager(seg, 1, [0, 1], VF_KINDS)
    m.start_component("fwd", 1, "forward")
    m.attach(ring(0), "rx", "fwd", None)
    m.attach(ring(1), "tx", "fwd", None)
    w = Wire(seg)
    w.push(0, [make_frame(i, 64) for i in range(100)])
    assert len(w.take(1, 100)) == 100
    m.close()
    w.pool.close()
    assert seg.pool_ctl[0] == seg.spec.nb_bufs


def test_a_port_used_in_both_directions_by_two_lcores(mgr, wire):
    """ring:1 is tx of a forwarder on lcore 1 and rx of one on lcore 2 (SPP's one rx user and one
    tx user per port): each lane opens its own handle."""
    mgr.start_component("a", 1, "forward")
    mgr.start_component("b", 2, "forward")
    mgr.attach(ring(0), "rx", "a", None)
    mgr.attach(ring(1), "tx", "a", None)
    mgr.attach(ring(1), "rx", "b", None)
    mgr.attach(ring(2), "tx", "b", None)
    frames = [make_frame(i, 64) for i in range(300)]
    wire.push(0, frames)
    assert wire.take(2, 300) == frames
    assert np.array_equal(mgr.counters["a"], mgr.counters["b"])


def test_status_shape(mgr):
    classifier(mgr, txs=(1, 2))
    mgr.add_entry(entry(None, 101), ring(2))
    mgr.add_entry(entry(MAC_A), ring(1))
    info = mgr.status(True)
    # SPP's keys, then ours: each port's counters (the ports in use)
    assert list(info) == ["phy", "vhost", "ring", "master-lcore", "core", "classifier_table", "stats"]
    assert [s["port"] for s in info["stats"]] == ["ring:0", "ring:1", "ring:2"]
    assert info["ring"] == ["0", "1", "2"] and info["vhost"] == [] and info["master-lcore"] == 0
    comp = info["core"][0]
    assert list(comp) == ["core", "name", "type", "rx_port", "tx_port", "counters"]
    assert info["core"][1] == {"core": 2, "type": "unuse"}
    assert info["classifier_table"] == [
        {"type": "mac", "value": "52:54:00:12:34:56", "port": "ring:1"},
        {"type": "vlan", "value": "101/default", "port": "ring:2"},
    ]
    assert "classifier_table" not in mgr.status(False)
    assert parse_mac("52:54:00:12:34:56") == int.from_bytes(MAC_A, "big")
