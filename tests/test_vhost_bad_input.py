"""A front-end that misbehaves costs its connection or its ring, never the nfv's worker: garbage,
a close mid-handshake, impossible memory regions, descriptor indexes and addresses out of range.
Meanwhile another patch of the same worker keeps forwarding, and a good front-end works after."""

from __future__ import annotations

import os
import socket
import struct

import numpy as np
import pytest

from spp.engine.virtio import defs as d
from spp.engine.virtio.frontend import VirtioUser
from spp.engine.virtio.message import recv_message, send_message, u64
from spp.integrations.testbed import Testbed, wait_for


@pytest.fixture
def nfv(tmp_path):
    socks = tmp_path / "s"
    socks.mkdir()
    with Testbed(nb_rings=2, log_dir=tmp_path / "logs") as bed:
        nfv = bed.start_nfv(1, extra=["--vhost-dir", str(socks)])
        for port in ("vhost:0", "nullpmd:0", "nullpmd:1", "nullpmd:2"):
            nfv.add(port)
        nfv.patch("nullpmd:0", "nullpmd:1")  # the bystander
        nfv.patch("vhost:0", "nullpmd:2")
        nfv.forward()
        nfv.sock = str(socks / "sock0")
        yield nfv


def vhost(nfv) -> dict:
    return nfv.port_stats()["vhost:0"]


def bystander_moves(nfv) -> None:
    before = nfv.port_stats()["nullpmd:1"]["tx"]
    wait_for(lambda: nfv.port_stats()["nullpmd:1"]["tx"] > before + 1000, 10, "the other patch to forward")


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def errors_become(nfv, n: int) -> None:
    wait_for(lambda: vhost(nfv)["errors"] == n and not vhost(nfv)["connected"], 10, f"{n} errors counted")


def negotiate(s: socket.socket) -> None:
    send_message(s, d.SET_OWNER)
    send_message(s, d.GET_FEATURES)
    offered = recv_message(s).u64()
    send_message(s, d.GET_PROTOCOL_FEATURES)
    recv_message(s)
    send_message(s, d.SET_PROTOCOL_FEATURES, u64(1 << d.PROTOCOL_F_REPLY_ACK))
    send_message(s, d.SET_FEATURES, u64(offered & (1 << d.F_VERSION_1 | 1 << d.USER_F_PROTOCOL_FEATURES)))


def test_garbage_and_a_close_mid_handshake(nfv):
    s = connect(nfv.sock)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
    errors_become(nfv, 1)
    s.close()
    s = connect(nfv.sock)
    s.sendall(struct.pack("<III", d.SET_MEM_TABLE, d.VERSION, 1 << 30))  # an absurd payload size
    errors_become(nfv, 2)
    s.close()
    s = connect(nfv.sock)
    send_message(s, d.GET_FEATURES)
    assert recv_message(s).u64() >> d.F_VERSION_1 & 1
    send_message(s, d.SET_OWNER)
    s.close()  # gone mid-handshake: not an error, just a disconnect
    wait_for(lambda: not vhost(nfv)["connected"], 10, "the disconnect")
    assert vhost(nfv)["errors"] == 2
    bystander_moves(nfv)


def test_impossible_memory_tables_are_refused(nfv):
    s = connect(nfv.sock)
    negotiate(s)
    small = os.memfd_create("small")
    os.ftruncate(small, 4096)
    cases = [
        (struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0x100000, 1 << 20, 0x7F0000000000, 0), [small]),
        (struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 4096, 0, 0), []),  # no descriptor
        (struct.pack("<II", 9, 0), [small]),  # more regions than vhost-user allows
        (struct.pack("<II", 1, 0) + struct.pack("<QQQQ", (1 << 64) - 4096, 8192, 0, 0), [small]),
    ]
    for i, (payload, fds) in enumerate(cases):
        send_message(s, d.SET_MEM_TABLE, payload, fds, flags=d.FLAG_NEED_REPLY)
        reply = recv_message(s)
        assert reply.request == d.SET_MEM_TABLE and reply.u64() != 0, i
    assert vhost(nfv)["errors"] == len(cases) and vhost(nfv)["connected"]
    send_message(s, d.SET_VRING_NUM, struct.pack("<II", 0, 300), flags=d.FLAG_NEED_REPLY)  # not 2^n
    assert recv_message(s).u64() != 0
    send_message(s, d.SET_VRING_NUM, struct.pack("<II", 7, 256), flags=d.FLAG_NEED_REPLY)  # no queue 7
    assert recv_message(s).u64() != 0
    os.close(small)
    s.close()
    bystander_moves(nfv)


def corrupt_and_kick(drv: VirtioUser, edit) -> None:
    """Publish one transmit descriptor after ``edit`` has spoilt the ring, and kick."""
    q = drv.txq
    with drv.lock:
        q.ring.desc["len"][0] = 64 + drv.hdr_len
        edit(q)
        q.avail_idx = (q.avail_idx + 1) & 0xFFFF
        q.ring.avail_idx[0] = q.avail_idx
        os.eventfd_write(q.kick_fd, 1)


def test_descriptors_out_of_range_stop_the_ring_not_the_worker(nfv, pool):
    bad_edits = [
        lambda q: q.ring.avail_ring.__setitem__(q.avail_idx & q.mask, 40000),  # index past the ring
        lambda q: q.ring.desc["addr"].__setitem__(0, 0xDEAD00000000),  # address outside memory
        lambda q: q.ring.desc["len"].__setitem__(0, 1 << 31),  # length running off the region
        lambda q: setattr(q, "avail_idx", (q.avail_idx + 5000) & 0xFFFF),  # avail index far ahead
    ]
    for n, edit in enumerate(bad_edits, 1):
        drv = VirtioUser(nfv.sock, name=f"bad{n}")
        try:
            wait_for(lambda drv=drv: drv.running and vhost(nfv)["running"], 10, "the handshake")
            corrupt_and_kick(drv, edit)
            wait_for(lambda n=n: vhost(nfv)["errors"] == n, 10, f"error {n} counted")
            assert not vhost(nfv)["running"] and vhost(nfv)["connected"]
        finally:
            drv.close()
        bystander_moves(nfv)
    # a well-behaved front-end afterwards is served as if nothing had happened
    drv = VirtioUser(nfv.sock, name="good")
    try:
        wait_for(lambda: drv.running and vhost(nfv)["running"], 10, "the handshake")
        bufs = pool.alloc_frames([bytes(60)] * 100)
        assert drv.tx_burst(pool, bufs) == 100
        wait_for(lambda: vhost(nfv)["rx"] == 100, 10, "100 frames received")
        assert nfv.port_stats()["nullpmd:2"]["tx"] == 100
    finally:
        drv.close()
    assert vhost(nfv)["errors"] == len(bad_edits)
    assert np.all(nfv.port_stats()["nullpmd:1"]["tx"] > 0)


def test_zero_copy_descriptor_pairs_out_of_range_stop_the_ring_not_the_worker(nfv, pool):
    """A driver posting header + frame pairs (as ours does zero-copy) with a successor past the
    ring, a frame outside its memory or one running off it: the ring stops, the worker goes on,
    and the driver's pool buffers all come back when it closes."""
    before = pool.available

    def frame_at(q, addr: int, length: int) -> None:
        q.data_addr[0] = addr
        q.data_len[0] = length

    bad_edits = [
        lambda drv, q: q.ring.desc["next"].__setitem__(0, 60000),
        lambda drv, q: frame_at(q, 0xDEAD00000000, 64),
        lambda drv, q: frame_at(q, int(drv._gpa_of[-1]), 1 << 31),
    ]
    for n, edit in enumerate(bad_edits, 1):
        drv = VirtioUser(nfv.sock, name=f"badzc{n}", pool=pool)
        try:
            assert drv.zc and drv.txq.ring.size == 2 * drv.size
            wait_for(lambda drv=drv: drv.running and vhost(nfv)["running"], 10, "the handshake")
            q = drv.txq
            with drv.lock:
                frame_at(q, int(drv._gpa_of[0]), 64)
                edit(drv, q)
                q.avail_idx = (q.avail_idx + 1) & 0xFFFF
                q.ring.avail_idx[0] = q.avail_idx
                os.eventfd_write(q.kick_fd, 1)
            wait_for(lambda n=n: vhost(nfv)["errors"] == n, 10, f"error {n} counted")
            assert not vhost(nfv)["running"] and vhost(nfv)["connected"]
        finally:
            drv.close()
        assert pool.available == before
        bystander_moves(nfv)
