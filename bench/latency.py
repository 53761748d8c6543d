"""Benchmark: round-trip latency through an idle forwarder, and what the forwarder costs at idle.

    sudo PYTHONPATH=. python bench/latency.py [--runs 3] [--count 500] [--interval 0.01]

Two namespaces (bench/peers.py) joined in turn by a veth pair of their own (no forwarder: the
floor), a Linux bridge, dpdk-testpmd (io mode over ``net_af_packet``, busy-polling), our nfv
patching ``phy:0 <-> phy:1`` (``nfv``), and our phy -> ring -> nfv -> ring -> phy chain (two nfv
processes, ``nfv-rings``); ``nfv-poll`` and ``nfv-rings-poll`` are the last two with every nfv
started with ``--busy-poll-us 20000``: it polls on for 20 ms after the last packet, so a ping
every 10 ms never finds it asleep, and it sleeps when nothing flows. ``vf`` is spp_vf with two
forward components (``phy:0 -> phy:1`` and back) on one lcore, ``vf-cls`` the same with a
classifier (B's MAC) towards B; ``mirror`` is spp_mirror with two mirror components the same
way, each copying every frame to a ring; ``-poll`` as above. For each: the forwarder's
CPU over ``--idle`` seconds with no traffic at all, then ``--count`` pings from A to B
``--interval`` s apart (slow enough that a default worker goes to sleep between two pings:
every ping finds the panel idle). RTTs are ping's own (kernel receive stamps), µs. "Added" is a
side's median (p99) RTT minus the bridge's in the same run: what the forwarder costs over the
kernel forwarding the same frames ("added_vs_veth": over the direct link).
Sides run in a different order each run; figures are medians over runs.
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

from peers import SIDES, forwarder, make_hosts, ping_times, process_cpu, target
from phy_vs_testpmd import hugepages, machine


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def cpu_share(pids: list[int], seconds: float) -> float:
    c0 = sum(process_cpu(p) for p in pids)
    time.sleep(seconds)
    return (sum(process_cpu(p) for p in pids) - c0) / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU measurement")
    ap.add_argument("--sides", default=",".join((*SIDES, "nfv-poll", "nfv-rings-poll")))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sides = args.sides.split(",")
    per: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    tag = f"{os.getpid() % 10000}"
    with tempfile.TemporaryDirectory(prefix="latbench") as tmpdir, hugepages(Path(tmpdir)) as (hugedir, note):
        tmp = Path(tmpdir)
        a, b = make_hosts(tag)
        try:
            for run in range(args.runs):
                order = sides[run % len(sides) :] + sides[: run % len(sides)]
                for side in order:
                    with forwarder(side, a, b, tmp, hugedir, f"{tag}{run}") as pids:
                        time.sleep(0.5)
                        idle = cpu_share(pids, args.idle) if pids else 0.0
                        c0 = sum(process_cpu(p) for p in pids)
                        t0 = time.monotonic()
                        rtts = ping_times(a, args.count, args.interval, target(side))
                        busy = (sum(process_cpu(p) for p in pids) - c0) / (time.monotonic() - t0)
                    r = {
                        "median_us": statistics.median(rtts) if rtts else float("nan"),
                        "p99_us": pct(rtts, 0.99) if rtts else float("nan"),
                        "lost": args.count - len(rtts),
                        "idle_cpu": idle,
                        "cpu_while_pinging": busy,
                    }
                    per[side].append(r)
                    print(
                        f"run {run + 1} {side}: median {r['median_us']:.0f} us, p99 {r['p99_us']:.0f} us, "
                        f"lost {r['lost']}, idle cpu {idle:.3f}, cpu while pinging {busy:.3f}",
                        file=sys.stderr,
                    )
        finally:
            a.destroy()
            b.destroy()
    summary: dict[str, dict[str, float]] = {}
    for side, rs in per.items():
        summary[side] = {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}
    for base, label in (("bridge", "added"), ("veth", "added_vs_veth")):
        if base not in per:
            continue
        for side, rs in per.items():
            for key in ("median_us", "p99_us"):
                added = [r[key] - br[key] for r, br in zip(rs, per[base], strict=True)]
                summary[side][f"{label}_{key}"] = round(statistics.median(added), 1)
    result = {
        "benchmark": f"ping A -> B, {args.count} pings {args.interval * 1000:.0f} ms apart, {args.runs} runs",
        "runs": per,
        "summary": summary,
        "hugepages": note,
        "machine": machine(),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
