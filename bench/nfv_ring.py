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
import os
import platform
import statistics
import sys

from harness import preload_frames, run_traffic

from spp.integrations.testbed import Testbed


def one_run(bed: Testbed, seconds: float, burst: int) -> float:
    (rate,), _ = run_traffic(bed.prefix, seconds, burst, (1,))
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
        preload_frames(bed.prefix)
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
