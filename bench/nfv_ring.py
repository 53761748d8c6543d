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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from spp.engine.pool import BufferPool  # noqa: E402
from spp.engine.ports.null import TEMPLATE  # noqa: E402
from spp.engine.ring import Ring  # noqa: E402
from spp.engine.shm import Segment  # noqa: E402
from spp.integrations.testbed import Testbed  # noqa: E402


def producer(prefix: str, stop_at: float, burst: int) -> None:
    seg = Segment.attach(prefix)
    pool, ring = BufferPool(seg), Ring(seg, 0)
    pool.data[:, : len(TEMPLATE)] = TEMPLATE
    pool.lengths[:] = len(TEMPLATE)
    pending = np.empty(0, np.uint32)
    while time.time() < stop_at:
        if len(pending) == 0:
            pending = pool.alloc(burst)
        n = ring.enqueue(pending)
        pending = pending[n:]
    pool.free(pending)
    pool.close()


def consumer(prefix: str, start_at: float, stop_at: float, burst: int, out: mp.Queue) -> None:
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
        bufs = ring.dequeue(burst * 2)
        counted += len(bufs)
        pool.free(bufs)
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
    ap.add_argument("--burst", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with Testbed(nb_rings=2, ring_size=2048) as bed:
        nfv = bed.start_nfv(1, lcores="0,1")
        nfv.add("ring:0")
        nfv.add("ring:1")
        nfv.patch("ring:0", "ring:1")
        nfv.forward()
        rates = [one_run(bed, args.seconds, args.burst) for _ in range(args.runs)]
        stats = nfv.port_stats()
        nfv.stop()
    result = {
        "benchmark": "nfv ring:0 -> ring:1, 64 B",
        "runs_mpps": [round(r / 1e6, 2) for r in rates],
        "median_mpps": round(statistics.median(rates) / 1e6, 2),
        "nfv_tx_drop": stats["ring:1"]["tx_drop"],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, {platform.release()}",
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
