"""Benchmark: CPU time per burst of the four vhost-user hot paths, in one process.

    PYTHONPATH=. python bench/vhost_burst.py [--bursts 32,256,1024] [--iterations 3000] [--runs 3]
                                             [--modes copy,zc] [--frame-size 64]

A ``vhost:0`` port and a ``virtio_user:0`` port of this process talk over a socket in a temporary
directory; bursts of 64-byte frames from a ``nullpmd`` source go one way (virtio-user transmit ->
vhost receive), then the other (vhost transmit -> virtio-user receive). Each call is timed with the
thread's CPU clock (``time.thread_time``), so time the thread spent preempted by other work on a
shared machine is not counted: the figure is what the code costs, not what the machine allowed.
Medians over ``--runs`` runs of the mean per call (first tenth of the iterations left out as
warm-up). The clock call itself (about 1 µs here) is included in every figure. ``--modes``: the
virtio-user driver copying through its own slots (``copy``, the default) and/or zero-copy (``zc``,
``virtio_user:N:zero_copy=1``: pool buffers posted as they are); runs of the modes alternate, so
both see the same machine. ``--frame-size``: frames longer than the source's 64 bytes (their bytes
beyond the first 64 are whatever the buffer held).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid

from spp.engine.pool import BufferPool
from spp.engine.portid import PortId
from spp.engine.ports import PortContext, open_port
from spp.engine.shm import Segment, SegmentSpec
from spp.integrations.testbed import wait_for

STAGES = ("virtio-user tx", "vhost rx", "vhost tx", "virtio-user rx")


def one_run(burst: int, iterations: int, queue_size: int, mode: str, size: int = 64) -> dict[str, float]:
    """Mean CPU seconds per call of each stage."""
    seg = Segment.create(
        SegmentSpec(
            prefix=f"vhburst{uuid.uuid4().hex[:8]}", nb_bufs=16384, nb_rings=1, primary_pid=os.getpid()
        )
    )
    try:
        pool = BufferPool(seg)
        with tempfile.TemporaryDirectory(prefix="spp-vhost-burst-") as d:
            options = {
                "vhost-dir": d,
                "virtio_user:0:queue_size": str(queue_size),
                "virtio_user:0:zero_copy": "1" if mode == "zc" else "0",
            }
            ctx = PortContext(seg=seg, pool=pool, client_id=1, options=options)
            vhost = open_port(PortId("vhost", 0), ctx)
            vuser = open_port(PortId("virtio_user", 0), ctx)
            null = open_port(PortId("nullpmd", 0), ctx)
            try:
                wait_for(lambda: vhost.info()["running"] and vuser.info()["running"], 10, "the handshake")
                spent = dict.fromkeys(STAGES, 0.0)
                clock = time.thread_time
                warm = iterations // 10
                for src, dst, tx_name, rx_name in (
                    (vuser, vhost, STAGES[0], STAGES[1]),
                    (vhost, vuser, STAGES[2], STAGES[3]),
                ):
                    for i in range(iterations):
                        bufs = null.rx_burst(burst)
                        if size != 64:
                            pool.lengths[bufs] = size
                        t0 = clock()
                        taken = src.tx_burst(bufs)
                        t1 = clock()
                        got = dst.rx_burst(burst)
                        t2 = clock()
                        pool.free(bufs[taken:])
                        pool.free(got)
                        if len(got) != burst:
                            raise RuntimeError(f"{rx_name}: {len(got)} of a burst of {burst}")
                        if i >= warm:
                            spent[tx_name] += t1 - t0
                            spent[rx_name] += t2 - t1
            finally:
                vuser.close()
                vhost.close()
                null.close()
        pool.close()
    finally:
        seg.unlink()
        seg.close()
    return {k: v / (iterations - iterations // 10) for k, v in spent.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bursts", default="32,256,1024")
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--queue-size", type=int, default=1024)
    p.add_argument("--modes", default="copy,zc", help="copy, zc or both")
    p.add_argument("--frame-size", type=int, default=64)
    args = p.parse_args()
    modes = args.modes.split(",")
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.node()}"
        f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}  queue size {args.queue_size}"
        f"  frames of {args.frame_size} B"
    )
    print(f"{'burst':>6} {'mode':>4}  " + "  ".join(f"{s:>22}" for s in STAGES))
    for burst in (int(b) for b in args.bursts.split(",")):
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for _ in range(args.runs):
            for m in modes:
                runs[m].append(one_run(burst, args.iterations, args.queue_size, m, args.frame_size))
        for m in modes:
            med = {s: statistics.median(r[s] for r in runs[m]) for s in STAGES}
            cells = [f"{med[s] * 1e6:7.1f} µs {med[s] / burst * 1e9:6.0f} ns/p" for s in STAGES]
            print(f"{burst:>6} {m:>4}  " + "  ".join(f"{c:>22}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
