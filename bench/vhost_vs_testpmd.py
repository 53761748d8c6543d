"""Benchmark: our vhost-user back-end and virtio-user driver, each in an spp_nfv, side by side
with dpdk-testpmd's net_vhost and net_virtio_user, 64-byte frames.

    sudo PYTHONPATH=. python bench/vhost_vs_testpmd.py [--runs 5] [--seconds 3] [--huge] [--queue-size N]
                                                       [--sides ours,testpmd[,zc][,ours:4096...]]

Topology (one direction, as testpmd's txonly -> rxonly pair)::

    ours:    nfv 2 [nullpmd:0 -> virtio_user:0]  ==sockN==>  nfv 1 [vhost:0 -> nullpmd:1]
             worker on CPU 0                                  worker on CPU 1
    testpmd: testpmd B txonly on net_virtio_user0  ==sock==>  testpmd A rxonly on net_vhost0
             forwarding lcore 0                               forwarding lcore 1

The rate is what the vhost side received per second over ``--seconds`` after 1 s of warm-up (nfv
1's ``vhost:0`` rx counter, or testpmd A's RX-packets). Beside it, the packets per CPU-second the
two processes of a side used over the same window (utime + stime from ``/proc``): on a machine
others share, a forwarder that is preempted loses rate but not efficiency, so this figure is the
steadier one. Runs alternate between the sides. Both virtio-user drivers get ``queue_size=N``
(``--queue-size``, default 4096, our driver's default; DPDK's is 256). testpmd takes its memory
from memfd (``--no-huge``) unless ``--huge`` (2 MiB hugepages; reserved and given back if none are
free). Everything is started afresh per run and removed afterwards. ``--sides`` may add ``zc``:
ours with the virtio-user driver zero-copy (``zero_copy=1``: pool buffers posted as they are)
instead of copying through its own slots, to compare the two in the same run. ``SIDE:N`` runs a
side with queue size ``N`` instead of ``--queue-size`` (``ours:1024,ours:4096,testpmd:1024``...).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spp.integrations.testbed import Testbed, wait_for
from tests.testpmd import Testpmd

WARMUP = 1.0
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def ours(tmp: Path, seconds: float, queue_size: int, zero_copy: bool = False) -> tuple[float, float]:
    socks = tmp / "socks"
    socks.mkdir(exist_ok=True)
    with Testbed(nb_rings=1, log_dir=tmp / "logs") as bed:
        back = bed.start_nfv(1, lcores="0,1", extra=["--vhost-dir", str(socks)])
        vdev = f"net_virtio_user0,path={socks / 'sock0'},queue_size={queue_size},zero_copy={int(zero_copy)}"
        front = bed.start_nfv(2, lcores="0,1", main_lcore=1, eal_extra=["--vdev", vdev])
        pids = [bed.procs["spp_nfv-1"].pid, bed.procs["spp_nfv-2"].pid]
        back.add("vhost:0")
        back.add("nullpmd:1")
        back.patch("vhost:0", "nullpmd:1")
        front.add("virtio_user:0")
        front.add("nullpmd:0")
        front.patch("nullpmd:0", "virtio_user:0")
        wait_for(lambda: front.port_stats()["virtio_user:0"]["running"], 10, "the handshake")
        back.forward()
        front.forward()
        time.sleep(WARMUP)
        t0, c0, u0 = time.monotonic(), back.port_stats()["vhost:0"]["rx"], cpu_seconds(pids)
        time.sleep(seconds)
        t1, c1, u1 = time.monotonic(), back.port_stats()["vhost:0"]["rx"], cpu_seconds(pids)
        front.stop()
        back.stop()
    return (c1 - c0) / (t1 - t0), (c1 - c0) / max(u1 - u0, 1 / TICK)


def testpmd(tmp: Path, seconds: float, huge: bool, queue_size: int) -> tuple[float, float]:
    sock = tmp / "tp.sock"
    mem = ["--huge-dir", str(tmp / "huge")] if huge else ["--no-huge", "-m", "512"]
    with (
        Testpmd(f"net_vhost0,iface={sock}", "rxonly", tmp / "tp-vhost.log", eal=["-l", "0,1", *mem]) as a,
        contextlib.ExitStack() as stack,
    ):
        a.wait_output("testpmd>")
        a.command("start")
        b = stack.enter_context(
            Testpmd(
                f"net_virtio_user0,path={sock},queue_size={queue_size}",
                "txonly",
                tmp / "tp-virtio.log",
                eal=["-l", "0,1", "--main-lcore", "1", *mem],
            )
        )
        b.wait_output("testpmd>")
        b.command("start")
        b.wait_output("packet forwarding - ports")
        pids = [a.proc.pid, b.proc.pid]
        time.sleep(WARMUP)
        t0, (c0, _), u0 = time.monotonic(), a.port_packets(), cpu_seconds(pids)
        time.sleep(seconds)
        t1, (c1, _), u1 = time.monotonic(), a.port_packets(), cpu_seconds(pids)
    return (c1 - c0) / (t1 - t0), (c1 - c0) / max(u1 - u0, 1 / TICK)


@contextlib.contextmanager
def hugepages(tmp: Path):
    nr = Path("/proc/sys/vm/nr_hugepages")
    before = int(nr.read_text())
    free = int(Path("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages").read_text())
    if free < 512:
        nr.write_text(str(before + 512 - free))
    mnt = tmp / "huge"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", str(mnt)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        nr.write_text(str(before))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--huge", action="store_true", help="testpmd on 2 MiB hugepages instead of memfd")
    p.add_argument("--queue-size", type=int, default=4096, help="virtqueue size of both virtio-user drivers")
    p.add_argument(
        "--sides",
        default="ours,testpmd",
        help="ours, testpmd and/or zc, comma-separated; SIDE:N gives that side queue size N",
    )
    args = p.parse_args()
    sides = args.sides.split(",")
    results: dict[str, list[float]] = {s: [] for s in sides}
    per_cpu: dict[str, list[float]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory(prefix="spp-vhost-bench-") as d:
        tmp = Path(d)
        with hugepages(tmp) if args.huge else contextlib.nullcontext():
            for run in range(args.runs):
                order = sides if run % 2 == 0 else sides[::-1]
                for side in order:
                    run_dir = tmp / f"{side.replace(':', '-')}{run}"
                    run_dir.mkdir()
                    kind, _, size = side.partition(":")
                    queue_size = int(size or args.queue_size)
                    rate, efficiency = (
                        testpmd(run_dir, args.seconds, args.huge, queue_size)
                        if kind == "testpmd"
                        else ours(run_dir, args.seconds, queue_size, zero_copy=kind == "zc")
                    )
                    results[side].append(rate)
                    per_cpu[side].append(efficiency)
                    print(
                        f"run {run + 1} {side:8s} {rate / 1e6:6.2f} Mpps  {efficiency / 1e6:6.2f} Mpp/CPU-s",
                        flush=True,
                    )
    med = {k: statistics.median(v) for k, v in results.items()}
    eff = {k: statistics.median(v) for k, v in per_cpu.items()}
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.node()}  {platform.processor()}"
        f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}  queue size {args.queue_size}"
    )
    for side, rates in results.items():
        print(
            f"{side:8s} runs {', '.join(f'{r / 1e6:.2f}' for r in rates)}  median {med[side] / 1e6:.2f} Mpps;"
            f"  per CPU-second {', '.join(f'{r / 1e6:.2f}' for r in per_cpu[side])}"
            f"  median {eff[side] / 1e6:.2f} M"
        )
    peers = [s for s in sides if s.partition(":")[0] == "testpmd"]
    for side in sides:
        for peer in peers if side not in peers else ():
            print(
                f"ratio {side}/{peer} {med[side] / med[peer]:.2f} (rate),"
                f" {eff[side] / eff[peer]:.2f} (per CPU-second)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
