"""Benchmark: start-up time of spp-primary and spp-nfv, and the CPU an idle nfv uses.

    python bench/startup_idle.py [--runs 5]

* primary: from spawning the process to spp-ctl listing it in /v1/processes;
* nfv: the duration of ``PUT /v1/primary/launch`` (it returns once the nfv has registered);
* idle CPU: an nfv forwarding ring:0 -> ring:1 with no traffic, and a stopped one, over 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from spp.integrations.testbed import Testbed


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nfv_pid(client_id: int) -> int:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        except OSError:
            continue
        if "spp.processes.nfv" in cmd and cmd[cmd.index("-n") + 1] == str(client_id):
            return int(pid)
    raise RuntimeError(f"nfv {client_id} not found")


def one_run(window: float) -> dict[str, float]:
    bed = Testbed(nb_rings=2)
    try:
        bed.start_ctl()
        t0 = time.monotonic()
        bed.start_primary()
        primary_s = time.monotonic() - t0
        t0 = time.monotonic()
        nfv = bed.launch_nfv(1)
        nfv_s = time.monotonic() - t0
        pid = nfv_pid(1)
        nfv.add("ring:0")
        nfv.add("ring:1")
        nfv.patch("ring:0", "ring:1")
        nfv.forward()
        time.sleep(0.5)
        c0 = cpu_seconds(pid)
        time.sleep(window)
        forwarding_idle = (cpu_seconds(pid) - c0) / window
        nfv.stop()
        c0 = cpu_seconds(pid)
        time.sleep(window)
        stopped = (cpu_seconds(pid) - c0) / window
    finally:
        bed.close()
    return {
        "primary_start_s": primary_s,
        "nfv_launch_s": nfv_s,
        "idle_forwarding_cpu": forwarding_idle,
        "idle_stopped_cpu": stopped,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--window", type=float, default=5.0, help="seconds over which idle CPU is measured")
    args = ap.parse_args()
    runs = [one_run(args.window) for _ in range(args.runs)]
    result = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    result["runs"] = len(runs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
