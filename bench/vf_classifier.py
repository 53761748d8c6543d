"""Benchmark: spp_vf's classifier, ring:0 -> 4 rings by destination MAC, 64-byte frames.

    python bench/vf_classifier.py [--runs 5] [--seconds 3] [--sizes 10,1000] [--engine-sizes 10,1000,100000]

A producer process enqueues 64-byte frames on ring:0 (their destination MACs cycle over the four
MACs of ring:1..ring:4); a classifier moves them ring:0 -> ring:1..4; a consumer process drains
the four rings and frees the buffers. Producer and consumer share CPU 0 and take turns with
``sched_yield`` (as bench/nfv_ring.py); the classifier runs on lcore 1. The rate is what the
consumer received per second.

Two ways of filling a table of N entries:

* **process** — a real spp_vf, started and wired through spp-ctl's REST API. A port holds one MAC
  (SPP's model), so an N-entry table needs N tx ports: ring:1..4 carry the traffic and N - 4
  more rings are tx ports whose MACs are in the table but never seen: a host with N VMs, four
  of them busy.
* **engine** — the same classifier step (:class:`spp.engine.components.ClassifierStep`) run by
  a :class:`~spp.engine.worker.Worker` thread of this process on lcore 1, with N MACs spread
  over the four tx rings. Used for table sizes the process model cannot hold (100,000 ports).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys

import numpy as np
from harness import run_traffic

from spp.engine.classifier import UNTAGGED, ClassifierTable, Entry, format_mac
from spp.engine.components import ClassifierStep, PortEnd
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId
from spp.engine.ports import PortContext, open_port
from spp.engine.shm import Segment
from spp.engine.vlan import VlanOp
from spp.engine.worker import Worker
from spp.integrations.testbed import Testbed

FRAME_LEN = 64
OUT_RINGS = (1, 2, 3, 4)
TRAFFIC_MACS = [0x525400000001 + i for i in range(len(OUT_RINGS))]
ENGINE_CLIENT_ID = 100  # counter row of the in-process classifier (no process holds it)


def fill_pool(seg: Segment) -> None:
    """Every buffer holds a frame to one of the four traffic MACs (buffer index mod 4), so the
    producer need not write anything and the classifier sees a mix of destinations."""
    data = seg.buf_data
    idx = np.arange(seg.nb_rows)  # (large buffers too: their rows follow the ordinary ones)
    data[:, :FRAME_LEN] = 0
    for i, mac in enumerate(TRAFFIC_MACS):
        data[idx % len(TRAFFIC_MACS) == i, :6] = np.frombuffer(mac.to_bytes(6, "big"), np.uint8)
    data[:, 6:12] = np.frombuffer(bytes.fromhex("02aa55000001"), np.uint8)
    data[:, 12:14] = np.frombuffer(b"\x88\xb5", np.uint8)
    seg.buf_len[:] = FRAME_LEN


def one_run(prefix: str, seconds: float, burst: int, stat_path: str) -> tuple[float, float]:
    """(packets/s out of the classifier, share of a CPU the classifier used while measured)."""
    rates, cpu = run_traffic(prefix, seconds, burst, OUT_RINGS, stat_path)
    return sum(rates), cpu


def process_mode(bed: Testbed, size: int, args: argparse.Namespace) -> dict[str, object]:
    vf = bed.start_worker("vf", 1, lcores="0,1", extra=["--burst", str(args.burst)])
    vf.start("cls", 1, "classifier")
    vf.attach("ring:0", "rx", "cls")
    rng = random.Random(size)
    for i in range(size):
        port = f"ring:{i + 1}"
        vf.attach(port, "tx", "cls")
        mac = TRAFFIC_MACS[i] if i < len(TRAFFIC_MACS) else rng.getrandbits(48) & ~(1 << 40)
        vf.table_add(format_mac(mac), port)
    fill_pool(Segment.attach(bed.prefix))
    stat = f"/proc/{bed.pids()['spp_vf-1']}/stat"
    runs = [one_run(bed.prefix, args.seconds, args.burst, stat) for _ in range(args.runs)]
    counters = vf.component("cls")["counters"]
    vf.exit()
    return {"runs": runs, "counters": counters}


def engine_mode(bed: Testbed, size: int, args: argparse.Namespace) -> dict[str, object]:
    seg = Segment.attach(bed.prefix)
    pool = BufferPool(seg)
    ctx = PortContext(seg=seg, pool=pool, client_id=ENGINE_CLIENT_ID)
    rx = PortEnd(open_port(PortId("ring", 0), ctx), VlanOp(), pool)
    txs = tuple(PortEnd(open_port(PortId("ring", n), ctx), VlanOp(), pool) for n in OUT_RINGS)
    rng = random.Random(size)
    entries = [(i, Entry(UNTAGGED, mac)) for i, mac in enumerate(TRAFFIC_MACS[:size])]
    seen = set(TRAFFIC_MACS)
    while len(entries) < size:
        mac = rng.getrandbits(48) & ~(1 << 40)
        if mac not in seen:
            seen.add(mac)
            entries.append((len(entries) % len(OUT_RINGS), Entry(UNTAGGED, mac)))
    ctr = np.zeros(4, np.uint64)
    step = ClassifierStep(rx, txs, ClassifierTable(entries), ctr, pool)
    worker = Worker(pool, name="bench-cls", burst=args.burst, lcore=1)
    worker.start()
    worker.publish([step])
    fill_pool(seg)
    stat = f"/proc/{os.getpid()}/task/{worker.native_id}/stat"
    try:
        runs = [one_run(bed.prefix, args.seconds, args.burst, stat) for _ in range(args.runs)]
    finally:
        worker.publish(None)
        worker.stop()
    return {"runs": runs, "counters": {"rx": int(ctr[0]), "tx": int(ctr[1]), "drop": int(ctr[3])}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--burst", type=int, default=512, help="the classifier's burst size (spp_vf's default)")
    ap.add_argument("--ring-size", type=int, default=4096)
    ap.add_argument("--sizes", default="10,1000", help="table sizes for the spp_vf process")
    ap.add_argument("--engine-sizes", default="10,1000,100000", help="table sizes for the engine")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = []
    for mode, sizes in (("process", args.sizes), ("engine", args.engine_sizes)):
        for size in [int(s) for s in sizes.split(",") if s]:
            nb_rings = max(size, len(OUT_RINGS)) + 1 if mode == "process" else len(OUT_RINGS) + 1
            with Testbed(nb_rings=nb_rings, ring_size=args.ring_size) as bed:
                run = process_mode if mode == "process" else engine_mode
                r = run(bed, size, args)
            runs = r["runs"]
            assert isinstance(runs, list)
            rates = [rate for rate, _ in runs]
            results.append(
                {
                    "mode": mode,
                    "entries": size,
                    "runs_mpps": [round(x / 1e6, 2) for x in rates],
                    "median_mpps": round(statistics.median(rates) / 1e6, 2),
                    "classifier_cpu": [round(cpu, 2) for _, cpu in runs],
                    "classifier_counters": r["counters"],
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr)
    summary = {
        "benchmark": f"vf classifier ring:0 -> ring:1..4 by MAC, 64 B, burst {args.burst}, "
        f"ring size {args.ring_size}",
        "results": [{k: v for k, v in r.items() if k != "classifier_counters"} for r in results],
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, kernel {platform.release()}",
    }
    print(json.dumps(summary, indent=1) if args.json else _text(summary))
    return 0


def _text(summary: dict[str, object]) -> str:
    lines = [f"benchmark: {summary['benchmark']}"]
    for r in summary["results"]:  # type: ignore[attr-defined]
        median, runs, cpu = r["median_mpps"], r["runs_mpps"], r["classifier_cpu"]
        lines.append(f"{r['mode']:8} {r['entries']:>7} entries: median {median} Mpps  runs {runs}  cpu {cpu}")
    lines.append(f"machine: {summary['machine']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
