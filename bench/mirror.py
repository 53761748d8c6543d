"""Benchmark: spp_mirror, ring:0 -> ring:1 (every packet) and ring:2 (a deep copy), 64-byte frames.

    python bench/mirror.py [--runs 5] [--seconds 3] [--burst 512]

A producer process enqueues 64-byte frames on ring:0; spp_mirror (a real process, started and
wired through spp-ctl's REST API) sends each to ring:1 and a copy in a new buffer to ring:2; a
consumer process drains both rings and frees the buffers. Producer and consumer share CPU 0 and
take turns with ``sched_yield`` (as bench/nfv_ring.py); the mirror runs on lcore 1. The rate is
the mirror's input rate: originals received on ring:1 per second (as many copies arrive on
ring:2, so the consumer sees twice that many packets).
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


def one_run(prefix: str, seconds: float, burst: int, stat_path: str) -> tuple[float, float, float]:
    """(originals/s, copies/s, share of a CPU the mirror process used while measured)."""
    (originals, copies), cpu = run_traffic(prefix, seconds, burst, (1, 2), stat_path)
    return originals, copies, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--burst", type=int, default=512, help="the mirror's burst size (spp_mirror's default)")
    ap.add_argument("--ring-size", type=int, default=4096)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with Testbed(nb_rings=3, ring_size=args.ring_size) as bed:
        preload_frames(bed.prefix)
        mirror = bed.start_worker("mirror", 1, lcores="0,1", extra=["--burst", str(args.burst)])
        mirror.start("mir", 1, "mirror")
        for port, direction in (("ring:0", "rx"), ("ring:1", "tx"), ("ring:2", "tx")):
            mirror.attach(port, direction, "mir")
        stat = f"/proc/{bed.pids()['spp_mirror-1']}/stat"
        runs = [one_run(bed.prefix, args.seconds, args.burst, stat) for _ in range(args.runs)]
        counters = mirror.component("mir")["counters"]
        mirror.exit()
    rates = [r[0] for r in runs]
    result = {
        "benchmark": f"mirror ring:0 -> ring:1 + deep copy to ring:2, 64 B, burst {args.burst}, "
        f"ring size {args.ring_size}",
        "runs_mpps": [round(r / 1e6, 2) for r in rates],
        "median_mpps": round(statistics.median(rates) / 1e6, 2),
        "copies_runs_mpps": [round(r[1] / 1e6, 2) for r in runs],
        "mirror_cpu": [round(r[2], 2) for r in runs],
        "mirror_counters": counters,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, kernel {platform.release()}",
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
