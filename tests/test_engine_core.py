"""The engine's shared-memory parts: segment, pool, rings, across threads and processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess

import numpy as np
import pytest

from spp.engine.pool import BufferPool
from spp.engine.portid import PortId, PortUidError, parse_port_uid
from spp.engine.ring import Ring
from spp.engine.shm import STATE_FREE, STATE_REGISTERED, Segment, SegmentError, SegmentSpec


def test_pool_alloc_free_returns_everything(segment, pool):
    total = segment.spec.nb_bufs
    got = [pool.alloc(300) for _ in range(10)]
    flat = np.concatenate(got)
    assert len(flat) == 3000 and len(np.unique(flat)) == 3000
    for g in got:
        pool.free(g)
    pool.flush()
    assert pool.shared_free == total


def test_pool_bursts_larger_than_the_cache_are_whole(make_segment):
    # a 4096-descriptor virtqueue asks for 4096 buffers at once: more than a handle's cache
    seg = make_segment(nb_bufs=8192)
    p = BufferPool(seg)
    small = p.alloc(100)  # so the cache holds some when the large burst comes
    p.vnet_word[:] = 7
    big = p.alloc(4096)
    assert len(big) == 4096 and len(np.unique(np.concatenate((small, big)))) == 4096 + 100
    assert not p.vnet_word[big].any()  # metadata cleared, as for any burst
    rest = p.alloc(5000)  # more than is left: fewer, not an error
    assert len(rest) == 8192 - 4096 - 100
    assert len(np.unique(np.concatenate((small, big, rest)))) == 8192
    p.free(big)
    p.free(rest)
    p.free(small)
    p.close()
    assert seg.pool_ctl[0] == 8192


def test_pool_exhaustion_gives_fewer_not_an_error(make_segment):
    seg = make_segment(nb_bufs=1024)
    p = BufferPool(seg)
    a = p.alloc(1000)
    b = p.alloc(100)
    assert len(a) == 1000 and len(b) == 24
    assert len(p.alloc(1)) == 0
    p.free(a)
    p.free(b)
    p.close()
    assert seg.pool_ctl[0] == 1024


def test_two_handles_never_hand_out_the_same_buffer(segment):
    p1, p2 = BufferPool(segment), BufferPool(segment)
    a, b = p1.alloc(2000), p2.alloc(2000)
    assert not set(a.tolist()) & set(b.tolist())
    p1.free(b)  # buffers may be freed by another handle than the one that allocated them
    p2.free(a)
    p1.close()
    p2.close()
    assert segment.pool_ctl[0] == segment.spec.nb_bufs


def test_ring_fifo_wraps_and_refuses_when_full(segment):
    r = Ring(segment, 0)
    size = r.size
    sent = 0
    for burst in (size - 10, 20, 5):  # ends past the wrap point
        arr = np.arange(sent, sent + burst, dtype=np.uint32)
        sent += r.enqueue(arr)
        out = r.dequeue(burst)
        assert (out == arr[: len(out)]).all()
    assert len(r) == 0
    full = np.arange(size + 7, dtype=np.uint32)
    assert r.enqueue(full) == size  # partial enqueue: the rest is the caller's to drop
    assert r.enqueue(full) == 0
    assert (r.dequeue(size * 2) == full[:size]).all()


def _producer(prefix: str, count: int) -> None:
    seg = Segment.attach(prefix)
    pool, ring = BufferPool(seg), Ring(seg, 1)
    seq = 0
    while seq < count:
        bufs = pool.alloc(min(256, count - seq))
        if len(bufs) == 0:
            continue
        pool.data[bufs, :4] = np.arange(seq, seq + len(bufs), dtype="<u4").view(np.uint8).reshape(-1, 4)
        pool.lengths[bufs] = 60
        done = 0
        while done < len(bufs):
            done += ring.enqueue(bufs[done:])
        seq += len(bufs)
    pool.close()


def test_ring_between_processes_keeps_order_and_data(segment):
    count = 200_000
    proc = mp.get_context("fork").Process(target=_producer, args=(segment.spec.prefix, count))
    proc.start()
    pool, ring = BufferPool(segment), Ring(segment, 1)
    seen = 0
    while seen < count:
        bufs = ring.dequeue(512)
        if len(bufs) == 0:
            continue
        seqs = pool.data[bufs, :4].copy().view("<u4").ravel()
        assert (seqs == np.arange(seen, seen + len(bufs))).all()
        seen += len(bufs)
        pool.free(bufs)
    proc.join(10)
    assert proc.exitcode == 0
    pool.close()
    assert segment.pool_ctl[0] == segment.spec.nb_bufs  # nothing leaked on either side


def test_segment_refuses_a_second_live_primary(make_segment):
    other = subprocess.Popen(["sleep", "30"])
    try:
        seg = make_segment(primary_pid=other.pid)
        with pytest.raises(SegmentError, match="in use by a running primary"):
            Segment.create(SegmentSpec(prefix=seg.spec.prefix, nb_bufs=1024, primary_pid=os.getpid()))
    finally:
        other.kill()
        other.wait()


def test_attach_without_primary_says_so():
    with pytest.raises(SegmentError, match="start spp-primary first"):
        Segment.attach("no-such-prefix-here")


def test_process_slots(segment):
    segment.claim_process_slot(3, "nfv")
    segment.mark_registered(3)
    assert segment.process_state(3) == (os.getpid(), STATE_REGISTERED)
    segment.procs[4, 0] = 999_999_999  # a pid that cannot be alive
    segment.procs[4, 2] = STATE_REGISTERED
    assert segment.process_state(4)[1] == STATE_FREE
    segment.claim_process_slot(4, "nfv")  # a dead holder's slot can be taken
    segment.release_process_slot(3)
    assert segment.process_state(3)[1] == STATE_FREE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ring:0", PortId("ring", 0)),
        ("phy:1nq2", PortId("phy", 1, 2)),
        ("phy:1 nq 2", PortId("phy", 1, 2)),
        ("nullpmd:12", PortId("nullpmd", 12)),
    ],
)
def test_port_uids(text, expected):
    assert parse_port_uid(text) == expected


@pytest.mark.parametrize("text", ["foo:1", "ring:x", "ring", "ring:-1", "ring:1:2", "", "ring:1nq1", ":1"])
def test_bad_port_uids(text):
    with pytest.raises(PortUidError, match="invalid port"):
        parse_port_uid(text)


def test_freeing_a_big_batch_into_a_nearly_empty_cache_duplicates_nothing(segment):
    p = BufferPool(segment)
    small = p.alloc(10)  # the cache is refilled in bulk, then mostly handed out below
    big = p.alloc(3000)
    p.free(small[:2])
    p.free(big)  # larger than the cache: must go straight to the shared stack
    p.free(small[2:])
    p.flush()
    stack = segment.free_stack[: int(segment.pool_ctl[0])]
    assert len(np.unique(stack)) == len(stack) == segment.spec.nb_bufs
    p.close()


def test_pool_one_buffer_at_a_time_matches_the_burst_api(make_segment):
    """alloc_one/free_one (a lone packet's path, Python ints): distinct buffers, -1 when the pool
    is dry, a freed one comes back, a large buffer goes back to the large stack, and a cache
    filled one at a time overflows into the shared stack without losing or doubling any."""
    seg = make_segment(nb_bufs=4096)
    p = BufferPool(seg)
    got = [p.alloc_one() for _ in range(4096)]
    assert min(got) >= 0 and len(set(got)) == 4096
    assert p.alloc_one() == -1 and len(p.alloc(1)) == 0
    p.free_one(got[7])
    assert p.alloc_one() == got[7]
    large = p.alloc_large(1)
    before = p.large_free
    p.free_one(int(large[0]))
    assert p.large_free == before + 1
    for b in got:
        p.free_one(b)
    p.flush()
    stack = seg.free_stack[: int(seg.pool_ctl[0])]
    assert len(stack) == len(np.unique(stack)) == 4096
    p.close()


def test_ring_one_index_at_a_time_interleaves_with_bursts(segment):
    """put_one/take_one (a lone packet's path) keep the FIFO with enqueue/dequeue across the wrap
    point, answer -1 (empty) and -2 (more than one: dequeue them), and refuse when full."""
    r = Ring(segment, 0)
    size = r.size
    assert r.take_one() == -1
    r.enqueue(np.arange(size - 3, dtype=np.uint32))
    r.dequeue(size - 3)  # head and tail now 3 short of the wrap
    sent = []
    for i in range(10):
        if i % 3:
            assert r.put_one(100 + i)
            sent.append(100 + i)
        else:
            assert r.enqueue(np.array([100 + i, 200 + i], np.uint32)) == 2
            sent += [100 + i, 200 + i]
    got: list[int] = []
    while len(r):
        one = r.take_one()
        if one == -2:
            got += r.dequeue(len(r) - 1).tolist()
        else:
            got.append(one)
    assert got == sent
    assert r.take_one() == -1
    assert r.enqueue(np.arange(size, dtype=np.uint32)) == size
    assert not r.put_one(5) and r.take_one() == -2
    r.dequeue(size)
