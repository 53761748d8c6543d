"""Benchmark: our vhost-user back-end and virtio-user driver, each in an spp_nfv, side by side
with dpdk-testpmd's net_vhost and net_virtio_user, 64-byte frames.

    sudo PYTHONPATH=. python bench/vhost_vs_testpmd.py [--runs 5] [--seconds 3] [--huge]

Topology (one direction, as testpmd's txonly -> rxonly pair)::

    ours:    nfv 2 [nullpmd:0 -> virtio_user:0]  ==sockN==>  nfv 1 [vhost:0 -> nullpmd:1]
             worker on CPU 0                                  worker on CPU 1
    testpmd: testpmd B txonly on net_virtio_user0  ==sock==>  testpmd A rxonly on net_vhost0
             forwarding lcore 0                               forwarding lcore 1

The rate is what the vhost side received per second over ``--seconds`` after 1 s of warm-up (nfv
1's ``vhost:0`` rx counter, or testpmd A's RX-packets). Runs alternate between the sides. testpmd
takes its memory from memfd (``--no-huge``) unless ``--huge`` (2 MiB hugepages; reserved and
given back if none are free). Everything is started afresh per run and removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
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


def ours(tmp: Path, seconds: float) -> float:
    socks = tmp / "socks"
    socks.mkdir(exist_ok=True)
    with Testbed(nb_rings=1, log_dir=tmp / "logs") as bed:
        back = bed.start_nfv(1, lcores="0,1", extra=["--vhost-dir", str(socks)])
        front = bed.start_nfv(2, lcores="0,1", main_lcore=1, extra=["--vhost-dir", str(socks)])
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
        t0, c0 = time.monotonic(), back.port_stats()["vhost:0"]["rx"]
        time.sleep(seconds)
        t1, c1 = time.monotonic(), back.port_stats()["vhost:0"]["rx"]
        front.stop()
        back.stop()
    return (c1 - c0) / (t1 - t0)


def testpmd(tmp: Path, seconds: float, huge: bool) -> float:
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
                f"net_virtio_user0,path={sock}",
                "txonly",
                tmp / "tp-virtio.log",
                eal=["-l", "0,1", "--main-lcore", "1", *mem],
            )
        )
        b.wait_output("testpmd>")
        b.command("start")
        b.wait_output("packet forwarding - ports")
        time.sleep(WARMUP)
        t0, (c0, _) = time.monotonic(), a.port_packets()
        time.sleep(seconds)
        t1, (c1, _) = time.monotonic(), a.port_packets()
    return (c1 - c0) / (t1 - t0)


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
    args = p.parse_args()
    results: dict[str, list[float]] = {"ours": [], "testpmd": []}
    with tempfile.TemporaryDirectory(prefix="spp-vhost-bench-") as d:
        tmp = Path(d)
        with hugepages(tmp) if args.huge else contextlib.nullcontext():
            for run in range(args.runs):
                order = ("ours", "testpmd") if run % 2 == 0 else ("testpmd", "ours")
                for side in order:
                    run_dir = tmp / f"{side}{run}"
                    run_dir.mkdir()
                    rate = (
                        ours(run_dir, args.seconds)
                        if side == "ours"
                        else testpmd(run_dir, args.seconds, args.huge)
                    )
                    results[side].append(rate)
                    print(f"run {run + 1} {side:8s} {rate / 1e6:6.2f} Mpps", flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.node()}  {platform.processor()}"
    )
    for side, rates in results.items():
        print(
            f"{side:8s} runs {', '.join(f'{r / 1e6:.2f}' for r in rates)}  median {med[side] / 1e6:.2f} Mpps"
        )
    print(f"ratio ours/testpmd {med['ours'] / med['testpmd']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
