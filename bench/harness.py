"""What the ring benchmarks share: a producer and a consumer process around a worker under test.

The producer fills ``ring:0`` with pool buffers (frames already in place) and the consumer drains
the output rings and frees what it took. Both are pinned to CPU 0 and take turns with
``sched_yield`` after each turn, in which each fills or empties a whole ring: left to the
scheduler's multi-millisecond slices, a ring would overflow while its reader waits. The worker
under test gets CPU 1 to itself.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np

from spp.engine.pool import BufferPool
from spp.engine.ports.null import TEMPLATE
from spp.engine.ring import Ring
from spp.engine.shm import Segment

WARMUP = 1.0


def cpu_seconds(stat_path: str) -> float:
    """utime + stime of a process or thread (``/proc/PID/stat`` or ``/proc/PID/task/TID/stat``)."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def preload_frames(prefix: str) -> None:
    """Put a 64-byte frame in every pool buffer once, so the producer only has to pass buffers."""
    seg = Segment.attach(prefix)
    seg.buf_data[:, : len(TEMPLATE)] = TEMPLATE
    seg.buf_len[:] = len(TEMPLATE)
    seg.close()


def producer(prefix: str, stop_at: float, burst: int) -> None:
    os.sched_setaffinity(0, {0})
    seg = Segment.attach(prefix)
    pool, ring = BufferPool(seg), Ring(seg, 0)
    pending = np.empty(0, np.uint32)
    while time.time() < stop_at:
        if len(pending) == 0:
            pending = pool.alloc(max(burst, ring.free_count))  # fill the ring in one turn
        n = ring.enqueue(pending)
        pending = pending[n:]
        os.sched_yield()
    pool.free(pending)
    pool.close()


def consumer(prefix: str, ring_ids: tuple[int, ...], start_at: float, stop_at: float, out: mp.Queue) -> None:
    os.sched_setaffinity(0, {0})
    seg = Segment.attach(prefix)
    pool = BufferPool(seg)
    rings = [Ring(seg, n) for n in ring_ids]
    counted = [0] * len(rings)
    counting = False
    while True:
        now = time.time()
        if now >= stop_at:
            break
        if not counting and now >= start_at:
            counting, counted = True, [0] * len(rings)
        for i, ring in enumerate(rings):
            bufs = ring.dequeue(ring.size)  # empty the ring in one turn
            counted[i] += len(bufs)
            pool.free(bufs)
        os.sched_yield()
    pool.close()
    out.put([c / (stop_at - start_at) for c in counted])


def run_traffic(
    prefix: str, seconds: float, burst: int, ring_ids: tuple[int, ...], stat_path: str | None = None
) -> tuple[list[float], float]:
    """Packets per second received on each of ``ring_ids``, and the share of a CPU that the
    process or thread at ``stat_path`` used meanwhile (0 without one)."""
    ctx = mp.get_context("spawn")  # no fork of a process that may run a worker thread
    q: mp.Queue = ctx.Queue()
    t0 = time.time() + 1.0  # spawning takes a moment
    stop_at = t0 + WARMUP + seconds
    procs = [
        ctx.Process(target=producer, args=(prefix, stop_at + 0.2, burst)),
        ctx.Process(target=consumer, args=(prefix, ring_ids, t0 + WARMUP, stop_at, q)),
    ]
    for p in procs:
        p.start()
    time.sleep(max(0.0, t0 + WARMUP - time.time()))
    cpu0 = cpu_seconds(stat_path) if stat_path else 0.0
    time.sleep(max(0.0, stop_at - time.time()))
    cpu = (cpu_seconds(stat_path) - cpu0) / seconds if stat_path else 0.0
    rates = q.get(timeout=seconds + 60)
    for p in procs:
        p.join(10)
    return rates, cpu
