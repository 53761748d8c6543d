"""Benchmark: spp_nfv forwarding ring:0 -> ring:1, 64-byte frames, producer and consumer in two
other processes.

    python bench/nfv_ring.py [--runs 5] [--seconds 3] [--burst 256]

A producer process allocates pool buffers holding a 64-byte frame and enqueues them on ring:0 as
fast as the ring takes them; spp_nfv (a real process, started and patched through spp-ctl's REST
API) moves ring:0 -> ring:1; a consumer process dequeues ring:1 and frees the buffers. The rate is
what the consumer received per second. Three busy processes share this machine's two cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time

import numpy as np

from spp.engine.pool import BufferPool
from spp.engine.ports.null import TEMPLATE
from spp.engine.ring import Ring
from spp.engine.shm import Segment
from spp.integrations.testbed import Testbed


def producer(prefix: str, stop_at: float, burst: int) -> None:
    os.sched_setaffinity(0, {0})  # producer and consumer on CPU 0, the nfv worker on CPU 1
    seg = Segment.attach(prefix)
    pool, ring = BufferPool(seg), Ring(seg, 0)
    pool.data[:, : len(TEMPLATE)] = TEMPLATE
    pool.lengths[:] = len(TEMPLATE)
    pending = np.empty(0, np.uint32)
    while time.time() < stop_at:
        if len(pending) == 0:
            pending = pool.alloc(max(burst, ring.free_count))  # fill the ring in one turn
        n = ring.enqueue(pending)
        pending = pending[n:]
        # The consumer shares this core. Taking turns every burst keeps both rings moving; left
        # to the scheduler's multi-millisecond slices, ring:1 would overflow while it waits.
        os.sched_yield()
    pool.free(pending)
    pool.close()


def consumer(prefix: str, start_at: float, stop_at: float, burst: int, out: mp.Queue) -> None:
    os.sched_setaffinity(0, {0})
    seg = Segment.attach(prefix)
    pool, ring = BufferPool(seg), Ring(seg, 1)
    counted = 0
    counting = False
    while True:
        now = time.time()
        if now >= stop_at:
            break
        if not counting and now >= start_at:
            counting, counted = True, 0
        bufs = ring.dequeue(ring.size)  # empty the ring in one turn
        counted += len(bufs)
        pool.free(bufs)
        os.sched_yield()  # take turns with the producer (see there)
    pool.close()
    out.put(counted / (stop_at - start_at))


def one_run(bed: Testbed, seconds: float, burst: int) -> float:
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()
    t0 = time.time()
    warmup = 1.0
    stop_at = t0 + warmup + seconds
    procs = [
        ctx.Process(target=producer, args=(bed.prefix, stop_at + 0.2, burst)),
        ctx.Process(target=consumer, args=(bed.prefix, t0 + warmup, stop_at, burst, q)),
    ]
    for p in procs:
        p.start()
    rate = q.get(timeout=seconds + 30)
    for p in procs:
        p.join(10)
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--burst", type=int, default=256, help="the nfv's burst size")
    ap.add_argument("--ring-size", type=int, default=4096)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with Testbed(nb_rings=2, ring_size=args.ring_size) as bed:
        nfv = bed.start_nfv(1, lcores="0,1", extra=["--burst", str(args.burst)])
        nfv.add("ring:0")
        nfv.add("ring:1")
        nfv.patch("ring:0", "ring:1")
        nfv.forward()
        rates = [one_run(bed, args.seconds, args.burst) for _ in range(args.runs)]
        stats = nfv.port_stats()
        nfv.stop()
    result = {
        "benchmark": f"nfv ring:0 -> ring:1, 64 B, burst {args.burst}, ring size {args.ring_size}",
        "runs_mpps": [round(r / 1e6, 2) for r in rates],
        "median_mpps": round(statistics.median(rates) / 1e6, 2),
        "nfv_tx_drop": stats["ring:1"]["tx_drop"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, kernel {platform.release()}",
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
