"""Benchmark: what one wake-up costs on this machine, the floor under an idle panel's latency.

    sudo PYTHONPATH=. .venv/bin/python bench/wake_floor.py [--count 300] [--gap 0.01] [--json]

A *sleeper* process (Python, as our worker is) waits in ``poll()``; a *waker* process stamps
``CLOCK_MONOTONIC`` and makes it readable. The sleeper stamps the moment ``poll()`` returns and
then runs a small fixed piece of Python (a ``struct`` unpack, a short loop, a list: the kind of
step a lone frame's path takes) and stamps again. Per case, medians and p99 of:

* ``wake``: waker's stamp -> sleeper's ``poll()`` returned;
* ``read``: the read that empties what woke it (one ``eventfd`` read, or ``recv`` until empty);
* ``step``: the fixed piece of Python right after the wake-up (cold after ``--gap`` idle);
* the same with the sleeper *busy-polling* (non-blocking reads in a loop, never sleeping): what
  the same hand-over costs without a wake-up (the difference is the wake-up itself).

What wakes the sleeper: an ``eventfd`` write (a ring doorbell), and a frame sent on a veth pair
whose other end the sleeper's AF_PACKET socket is bound to, polled directly and through an
epoll set as our phy port does. Sleeper and waker on different CPUs (the sleeper's CPU is idle,
so on a VM with no cpuidle driver its vCPU is halted), and on the same CPU (a context switch, no
idle CPU to wake). ``--gap``: the pause between two events (10 ms: every event meets an idle
sleeper, as a ping every 10 ms meets our panel).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ETH_P_ALL = 0x0003
_ST = struct.Struct("<qqq")
_PROBE = struct.Struct("<QiiqqQiiIIIHHHH")
_PROBE_BYTES = bytes(_PROBE.size)
Make = Callable[[], tuple[int, Callable[[], None]]]  # in the sleeper: (fd to poll, drain it)
Case = tuple[Make, Callable[[], None], Callable[[], None]]  # make, kick (in the waker), close


def probe() -> int:
    """A fixed handful of Python steps, about what a lone frame's receive takes (warm: ~10 µs)."""
    fields = _PROBE.unpack_from(_PROBE_BYTES, 0)
    out: list[int] = []
    for i in range(40):
        if fields[i % 15] == 0:
            out.append(i)
    return len(out) + sum(fields)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


@contextlib.contextmanager
def veth_pair(tag: str) -> Iterator[tuple[str, str]]:
    a, b = f"spwf{tag}a", f"spwf{tag}b"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    try:
        for end in (a, b):
            with contextlib.suppress(OSError), open(f"/proc/sys/net/ipv6/conf/{end}/disable_ipv6", "w") as f:
                f.write("1")
            subprocess.run(["ip", "link", "set", end, "up"], check=True)
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)


def sleeper_main(cpu: int, make: Make, spin: bool, count: int, ready_w: int, out_w: int) -> None:
    os.sched_setaffinity(0, {cpu})
    fd, drain = make()
    os.set_blocking(fd, False)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    os.write(ready_w, b"r")
    for _ in range(count):
        if spin:
            while not poller.poll(0):
                pass
        else:
            poller.poll(-1)
        t1 = time.monotonic_ns()
        drain()
        t2 = time.monotonic_ns()
        probe()
        t3 = time.monotonic_ns()
        os.write(out_w, _ST.pack(t1, t2, t3))
    os._exit(0)


def run_case(
    cpus: tuple[int, int],
    make: Make,
    kick: Callable[[], None],
    spin: bool,
    count: int,
    gap: float,
) -> dict[str, float]:
    """``make`` (in the sleeper) opens what it waits on; ``kick`` (in the waker) makes it readable."""
    ready_r, ready_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            sleeper_main(cpus[1], make, spin, count, ready_w, out_w)
        finally:
            os._exit(1)
    os.sched_setaffinity(0, {cpus[0]})
    os.read(ready_r, 1)
    wakes: list[float] = []
    reads: list[float] = []
    steps: list[float] = []
    try:
        for _ in range(count):
            time.sleep(gap)
            t0 = time.monotonic_ns()
            kick()
            raw = b""
            while len(raw) < _ST.size:
                more = os.read(out_r, _ST.size - len(raw))
                if not more:
                    raise RuntimeError("the sleeper died")
                raw += more
            t1, t2, t3 = _ST.unpack(raw)
            wakes.append((t1 - t0) / 1000)
            reads.append((t2 - t1) / 1000)
            steps.append((t3 - t2) / 1000)
    finally:
        os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, out_r, out_w):
            os.close(fd)
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return {
        "wake_median_us": round(statistics.median(wakes), 1),
        "wake_p99_us": round(pct(wakes, 0.99), 1),
        "read_median_us": round(statistics.median(reads), 1),
        "read_p99_us": round(pct(reads, 0.99), 1),
        "step_median_us": round(statistics.median(steps), 1),
        "step_p99_us": round(pct(steps, 0.99), 1),
    }


def eventfd_case() -> Case:
    efd = os.eventfd(0, os.EFD_NONBLOCK)

    def make() -> tuple[int, Callable[[], None]]:
        return efd, lambda: os.eventfd_read(efd)

    return make, lambda: os.eventfd_write(efd, 1), lambda: os.close(efd)


def packet_case(rx_if: str, tx_if: str, via_epoll: bool) -> Case:
    frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes(46)  # local experimental type
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    tx.bind((tx_if, 0))
    keep: list[object] = []

    def make() -> tuple[int, Callable[[], None]]:
        rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        rx.bind((rx_if, ETH_P_ALL))
        rx.setblocking(False)

        def drain() -> None:
            with contextlib.suppress(BlockingIOError):
                while True:
                    rx.recv(2048)

        if not via_epoll:
            return rx.fileno(), drain
        ep = select.epoll()
        ep.register(rx.fileno(), select.EPOLLIN)
        keep.append(ep)  # the epoll object closes its fd when collected
        return ep.fileno(), drain

    return make, lambda: tx.send(frame), tx.close


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--gap", type=float, default=0.01, help="seconds between two events")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if (os.cpu_count() or 1) < 2:
        print("needs 2 CPUs", file=sys.stderr)
        return 1
    results: dict[str, dict[str, float]] = {}
    with veth_pair(str(os.getpid() % 10000)) as (a, b):
        kinds = {
            "eventfd": eventfd_case,
            "af_packet": lambda: packet_case(a, b, False),
            "af_packet via epoll": lambda: packet_case(a, b, True),
        }
        for kind, build in kinds.items():
            for where, cpus in (("other CPU", (0, 1)), ("same CPU", (0, 0))):
                for spin in (False, True):
                    if spin and where == "same CPU":
                        continue  # a spinner sharing the waker's CPU measures the scheduler only
                    make, kick, close = build()
                    try:
                        r = run_case(cpus, make, kick, spin, args.count, args.gap)
                    finally:
                        close()
                    name = f"{kind}, {where}, {'busy-polling' if spin else 'asleep in poll()'}"
                    results[name] = r
                    print(
                        f"{name}: wake {r['wake_median_us']} / p99 {r['wake_p99_us']} us, "
                        f"read {r['read_median_us']} / {r['read_p99_us']} us, "
                        f"Python step after it {r['step_median_us']} / {r['step_p99_us']} us",
                        file=sys.stderr,
                    )
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    idle_driver = Path("/sys/devices/system/cpu/cpuidle/current_driver")
    out = {
        "benchmark": f"{args.count} events {args.gap * 1000:g} ms apart per case",
        "load_average": load,
        "cpuidle_driver": idle_driver.read_text().strip() if idle_driver.exists() else "n/a",
        "results": results,
    }
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
