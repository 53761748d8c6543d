"""Benchmark: the engine alone. spp_nfv ``nullpmd:0 -> nullpmd:1`` against ``dpdk-testpmd --vdev
net_null0 --vdev net_null1 --forward-mode=io``, one forwarding core each (CPU 1), same run.

    sudo PYTHONPATH=. python bench/null_vs_testpmd.py [--runs 5] [--seconds 3] [--burst N]

Both null sources hand out real pool buffers with their length set, and both sinks free them
(DPDK's null PMD: ``rte_pktmbuf_alloc_bulk`` + ``data_len``, then ``rte_pktmbuf_free``). Rate =
frames transmitted on port 1 per second over ``--seconds`` after one second of warm-up, from
each forwarder's own counters (our nfv status, testpmd's ``show port stats``). Runs alternate
(ABBA) and each side is started afresh per run; the figure is the median. testpmd runs with its
default burst (32) and hugepages (a private hugetlbfs, reserved and given back as
bench/phy_vs_testpmd.py does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from phy_vs_testpmd import TestPmd, hugepages, machine

from spp.integrations.testbed import Testbed


def cpu_seconds(task: str) -> float:
    """Time a thread ran, from the scheduler's ns clock (``/proc/PID/task/TID/schedstat``):
    tick-sampled utime/stime are too coarse, and on this VM under-count busy threads."""
    with open(f"{task}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def busiest_thread(pid: int) -> str:
    """The forwarding thread: the one running now (the others block in recv or poll)."""
    tasks = [f"/proc/{pid}/task/{tid}" for tid in os.listdir(f"/proc/{pid}/task")]
    before = {t: cpu_seconds(t) for t in tasks}
    time.sleep(0.3)
    return max(tasks, key=lambda t: cpu_seconds(t) - before[t])


class NullTestPmd(TestPmd):
    """testpmd forwarding net_null0 -> net_null1 (io mode, one forwarding core)."""

    def __init__(self, hugedir: Path, log_path: Path, tag: str) -> None:
        super().__init__([], hugedir, log_path, tag, 0, 32)
        at = self.argv.index("--file-prefix")
        self.argv[at:at] = ["--vdev", "net_null0", "--vdev", "net_null1"]
        self.argv.remove("--burst=32")  # its default

    def tx(self) -> int:
        return self.port_stats()[1]["TX-packets"]


def ours(seconds: float, burst: int | None) -> tuple[float, float]:
    """(packets per second, CPU seconds per second the nfv's forwarding thread had)"""
    with Testbed(nb_rings=1) as bed:
        nfv = bed.start_nfv(1, lcores="0,1", extra=["--burst", str(burst)] if burst else [])
        pid = bed.pids()["spp_nfv-1"]
        nfv.add("nullpmd:0")
        nfv.add("nullpmd:1")
        nfv.patch("nullpmd:0", "nullpmd:1")
        nfv.forward()
        time.sleep(1.0)
        stat = busiest_thread(pid)
        t0, n0, c0 = time.monotonic(), nfv.port_stats()["nullpmd:1"]["tx"], cpu_seconds(stat)
        time.sleep(seconds)
        t1, n1, c1 = time.monotonic(), nfv.port_stats()["nullpmd:1"]["tx"], cpu_seconds(stat)
        nfv.stop()
    return (n1 - n0) / (t1 - t0), (c1 - c0) / (t1 - t0)


def theirs(seconds: float, hugedir: Path, log_path: Path, tag: str) -> tuple[float, float]:
    """(packets per second, CPU seconds per second of testpmd's forwarding lcore)"""
    with NullTestPmd(hugedir, log_path, tag) as pmd:
        time.sleep(1.0)
        stat = busiest_thread(pmd.pid)
        t0, n0, c0 = time.monotonic(), pmd.tx(), cpu_seconds(stat)
        time.sleep(seconds)
        t1, n1, c1 = time.monotonic(), pmd.tx(), cpu_seconds(stat)
    return (n1 - n0) / (t1 - t0), (c1 - c0) / (t1 - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--burst", type=int, default=None, help="the nfv's --burst (default: its own)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rates: dict[str, list[float]] = {"spp_nfv": [], "testpmd": []}
    cpus: dict[str, list[float]] = {"spp_nfv": [], "testpmd": []}
    with tempfile.TemporaryDirectory(prefix="nullbench") as tmp, hugepages(Path(tmp)) as (hugedir, note):
        for run in range(args.runs):
            order = ("spp_nfv", "testpmd") if run % 2 == 0 else ("testpmd", "spp_nfv")
            for side in order:
                if side == "spp_nfv":
                    rate, cpu = ours(args.seconds, args.burst)
                else:
                    rate, cpu = theirs(args.seconds, hugedir, Path(tmp) / "testpmd.log", f"{run}")
                rates[side].append(rate)
                cpus[side].append(cpu)
                print(f"run {run + 1} {side}: {rate / 1e6:.2f} Mpps, cpu {cpu:.2f}", file=sys.stderr)
    med = {side: statistics.median(r) for side, r in rates.items()}
    # Per CPU-second of the forwarding thread: what each would do with a core to itself. The
    # machine is shared, and a forwarder that got 60 % of its CPU is not a slower forwarder.
    per_cpu = {
        side: statistics.median(r / max(c, 1e-9) for r, c in zip(rates[side], cpus[side], strict=True))
        for side in rates
    }
    result = {
        "benchmark": "null -> null, one forwarding core, 64 B",
        "nfv_burst": args.burst or "default",
        "runs_mpps": {side: [round(r / 1e6, 2) for r in rs] for side, rs in rates.items()},
        "median_mpps": {side: round(m / 1e6, 2) for side, m in med.items()},
        "ratio": round(med["spp_nfv"] / med["testpmd"], 2),
        "forwarder_cpu": {side: [round(c, 2) for c in cs] for side, cs in cpus.items()},
        "median_mpps_per_cpu_second": {side: round(m / 1e6, 2) for side, m in per_cpu.items()},
        "ratio_per_cpu_second": round(per_cpu["spp_nfv"] / per_cpu["testpmd"], 2),
        "hugepages": note,
        "machine": machine(),
    }
    print(json.dumps(result, indent=1) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
