"""Benchmark: spp_nfv forwarding phy:0 -> phy:1 between veth pairs, side by side with DPDK's
``dpdk-testpmd`` io forwarding over two ``net_af_packet`` vdevs on the same veths, 64-byte frames.

    sudo PYTHONPATH=/work/main python bench/phy_vs_testpmd.py [--runs 5] [--seconds 5] [--no-zero-drop]
        [--json | --json-file FILE] [--keep-logs DIR]

Topology (the one of ``dataplane-probes.md``)::

    netns A: A-inner ==veth== phy0 (root ns) -> forwarder -> phy1 (root ns) ==veth== B-inner :netns B
             generator (CPU 0)      spp_nfv worker or testpmd lcore 1 (CPU 1)       counted here

* The generator is native: ``bench/tools/afp_gen.c``, compiled with the system C compiler into a
  temporary directory at start. AF_PACKET + PACKET_QDISC_BYPASS + ``sendmmsg`` bursts, pinned to
  CPU 0, either flat out or paced (burst k leaves at ``t0 + k * burst / rate``).
* Ours: spp-ctl, spp-primary (``--iface phy0 --iface phy1``) and an nfv launched the SPP way
  (``PUT /v1/primary/launch``, ``-l 0,1``: worker on lcore 1), patched ``phy:0 -> phy:1`` over REST.
* testpmd: ``dpdk-testpmd -l 0,1 --no-pci --file-prefix <unique> --huge-dir <private hugetlbfs>
  --vdev net_af_packet0,iface=phy0,... --vdev net_af_packet1,iface=phy1,... -- -i
  --forward-mode=io --nb-cores=1``, driven through its interactive prompt (stdin), forwarding
  lcore 1. It forwards phy1 -> phy0 too (io mode pairs the ports); nothing arrives there.

Each side is started afresh for every run, so only one of them has sockets on the veths. A run:
counters (kernel counters of all four veth ends, the forwarder's port counters, CPU times) are
read before the generator starts, after ``--warmup`` s, after ``--seconds`` more, and once the
generator has stopped and the path has drained. The rate is B-inner's ``rx_packets`` over the
measurement window; the losses are counted over the whole run (offered = A-inner ``tx_packets``,
delivered = B-inner ``rx_packets``) and attributed to the stages where counters see them. Runs
alternate between the sides (ABBA order). The forwarder's CPU is ``utime + stime`` of its process
over the window (testpmd busy-polls, so about one full CPU whatever the rate); CPU 1 as a whole
(from /proc/stat) adds the softirq work the forwarder's transmissions cause.

The machine may be shared: before each run the benchmark waits (up to ``--quiet-timeout`` s) until
other processes use under ``--quiet-cpu`` CPUs, measures what they used during the window (all
CPUs' busy time minus this benchmark's process tree and kernel threads), and repeats a run during
which that plus the hypervisor's steal time exceeded ``--disturbed-cpu`` (up to ``--retries``
times). Disturbed runs are reported, marked, and left out of the medians.

``--zero-drop`` (on by default) then searches, per side, the highest paced generator rate that
loses nothing end to end over a ``--trial-seconds`` trial (bisection, one forwarder instance per
side for the whole search).

Needs root (namespaces, veth, hugepages), ``dpdk-testpmd`` (Debian: dpdk-dev), a C compiler and
``stdbuf``; no network. Everything created is removed on exit, also on error or Ctrl-C: the
namespaces and veths, every process (by PID), the hugetlbfs mount and DPDK's runtime directory;
a hugepage reservation the benchmark had to make is given back.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

try:
    import numpy as np

    from spp.integrations.testbed import Testbed
except ImportError as _e:  # pragma: no cover - environment problem, say what to do
    sys.exit(f"phy_vs_testpmd: cannot import the package ({_e}); run with PYTHONPATH=/work/main")

HERE = Path(__file__).resolve().parent
GEN_SOURCE = HERE / "tools" / "afp_gen.c"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HUGEPAGES_WANTED = 512  # 2 MiB pages; testpmd's default mbuf pool alone takes ~340 MB
GEN_CPU = 0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# -- processes -------------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the process group of ``proc`` (each child gets its own session)."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def kill_pid(pid: int) -> None:
    """Make sure a process we know by PID (not our child) is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.05)


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of a whole process (all threads), in clock ticks. This kernel has no
    IRQ_TIME_ACCOUNTING, so softirq work done on the process's way out of a syscall (B's veth
    receive, after a transmit) lands in its stime."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def cpu_times() -> dict[int, tuple[int, int, int, int]]:
    """Per CPU from /proc/stat: (busy, softirq, total, steal) ticks. Busy is user + nice + system +
    irq + softirq: idle, iowait and steal (the hypervisor running someone else) are not."""
    out: dict[int, tuple[int, int, int, int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]  # user nice system idle iowait irq softirq steal
                out[int(m.group(1))] = (v[0] + v[1] + v[2] + v[5] + v[6], v[6], sum(v[:8]), v[7])
    return out


PF_KTHREAD = 0x00200000


def process_ticks() -> dict[int, tuple[int, int, bool]]:
    """Every process: pid -> (ppid, utime + stime ticks, is a kernel thread)."""
    out: dict[int, tuple[int, int, bool]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(name)] = (
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
            bool(int(fields[6]) & PF_KTHREAD),
        )
    return out


def foreign_cpu(
    p0: dict[int, tuple[int, int, bool]],
    p1: dict[int, tuple[int, int, bool]],
    c0: dict[int, tuple[int, int, int, int]],
    c1: dict[int, tuple[int, int, int, int]],
    dt: float,
) -> float:
    """CPUs used between two snapshots by anything but this benchmark, its descendants and kernel
    threads (softirq work of the path): all CPUs' busy time minus what those account for. The
    machine is shared, and other people's short-lived test processes show up only this way."""
    ours = {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, _) in p1.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                grew = True
    busy = sum(c1[c][0] - c0[c][0] for c in c1 if c in c0)
    accounted = sum(t - (p0[pid][1] if pid in p0 else 0) for pid, (_, t, k) in p1.items() if k or pid in ours)
    return max(0, busy - accounted) / CLK_TCK / max(dt, 1e-9)


def net_dev(pid: int | None) -> dict[str, dict[str, int]]:
    """The kernel's interface counters in the network namespace of ``pid`` (None: ours)."""
    path = "/proc/self/net/dev" if pid is None else f"/proc/{pid}/net/dev"
    out: dict[str, dict[str, int]] = {}
    with open(path) as f:
        for line in f.readlines()[2:]:
            name, _, rest = line.partition(":")
            v = [int(x) for x in rest.split()]
            out[name.strip()] = {"rx": v[1], "rx_drop": v[3], "tx": v[9], "tx_drop": v[11]}
    return out


# -- topology --------------------------------------------------------------------------------------


@dataclass
class Host:
    """Namespace ``ns`` holding ``inner``; its veth peer ``outer`` stays in the root namespace.
    IPv6 is off on both ends before they come up, so the kernel sends nothing of its own (router
    solicitations, MLD) and every counted frame is the generator's. A ``sleep`` holder process
    lives in the namespace so its counters can be read from /proc/PID/net/dev without a fork."""

    ns: str
    outer: str
    inner: str
    holder: subprocess.Popen[bytes] | None = None

    def create(self) -> Host:
        self.destroy()
        run(["ip", "netns", "add", self.ns])
        run(["ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner, "netns", self.ns])
        Path(f"/proc/sys/net/ipv6/conf/{self.outer}/disable_ipv6").write_text("1")
        self.exec(["sysctl", "-qw", f"net.ipv6.conf.{self.inner}.disable_ipv6=1"])
        run(["ip", "-n", self.ns, "link", "set", self.inner, "up"])
        run(["ip", "link", "set", self.outer, "up"])
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def exec(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.ns, *argv])

    def counters(self) -> dict[str, int]:
        assert self.holder is not None
        return net_dev(self.holder.pid)[self.inner]

    def destroy(self) -> None:
        if self.holder is not None:
            stop_process(self.holder)
            self.holder = None
        run(["ip", "link", "del", self.outer], check=False)
        run(["ip", "netns", "del", self.ns], check=False)


# -- hugepages -------------------------------------------------------------------------------------


def meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def hugepages(tmp: Path) -> Iterator[tuple[Path, str]]:
    """A private hugetlbfs mount for testpmd, reserving 2 MiB pages first if too few are free.
    Yields (mount point, a note on what was done). Undone on exit."""
    nr_path = Path("/proc/sys/vm/nr_hugepages")
    before = int(nr_path.read_text())
    free = meminfo("HugePages_Free")
    note = f"{free} free 2 MiB hugepages were already reserved; used them"
    changed = False
    if free < HUGEPAGES_WANTED:
        nr_path.write_text(str(before + HUGEPAGES_WANTED - free))
        changed = True
        now = meminfo("HugePages_Free")
        note = f"reserved {HUGEPAGES_WANTED - free} hugepages (2 MiB) for testpmd, released afterwards"
        if now < HUGEPAGES_WANTED // 2:
            nr_path.write_text(str(before))
            raise BenchError(f"could not reserve hugepages (only {now} free)")
    mnt = tmp / "hugepages"
    mnt.mkdir()
    mounted = False
    try:
        run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", str(mnt)])
        mounted = True
        yield mnt, note
    finally:
        if mounted:
            for f in mnt.iterdir():
                with contextlib.suppress(OSError):
                    f.unlink()
            run(["umount", str(mnt)], check=False)
        if changed:
            with contextlib.suppress(OSError):
                nr_path.write_text(str(before))


# -- the two forwarders ----------------------------------------------------------------------------


@dataclass
class PortCounts:
    """The forwarder's own view: frames taken from phy0, lost in phy0's receive ring, sent on
    phy1, refused by phy1's transmit."""

    rx: int = 0
    rx_drop: int = 0
    tx: int = 0
    tx_drop: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Forwarder(Protocol):
    name: str
    pid: int

    def counts(self) -> PortCounts: ...


class SppForwarder:
    """spp-ctl + spp-primary + one nfv launched by the primary, patched phy:0 -> phy:1."""

    name = "spp_nfv"

    def __init__(self, phys: list[str], log_dir: Path, tag: str) -> None:
        self.bed = Testbed(ifaces=phys, nb_rings=1, prefix=f"pvt{os.getpid()}r{tag}", log_dir=log_dir)
        self.pid = 0

    def __enter__(self) -> SppForwarder:
        try:
            self.bed.start()
            nfv = self.bed.launch_nfv(1, lcores="0,1")
            self.pid = self._find_pid()
            nfv.patch("phy:0", "phy:1")
            nfv.forward()
        except BaseException:
            self.close()
            raise
        return self

    def _find_pid(self) -> int:
        prefix = self.bed.prefix
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"spp.processes.nfv" in argv and prefix.encode() in argv:
                return int(d.name)
        raise BenchError("the launched spp_nfv process was not found")

    def counts(self) -> PortCounts:
        phy = self.bed.primary_status()["phy_ports"]
        p0, p1 = phy[0], phy[1]
        return PortCounts(rx=p0["rx"], rx_drop=p0["rx_drop"], tx=p1["tx"], tx_drop=p1["tx_drop"])

    def close(self) -> None:
        self.bed.close()
        if self.pid:
            kill_pid(self.pid)  # the primary stops it; make sure

    def __exit__(self, *exc: object) -> None:
        self.close()


class TestPmd:
    """dpdk-testpmd in interactive mode; commands go to its stdin, replies are parsed from its
    line-buffered stdout (``stdbuf -oL``: testpmd's stdio would otherwise buffer a pipe)."""

    __test__ = False
    name = "testpmd"

    def __init__(
        self, phys: list[str], hugedir: Path, log_path: Path, tag: str, framecnt: int, burst: int
    ) -> None:
        self.prefix = f"pvtpmd{os.getpid()}r{tag}"
        self.hugedir = hugedir
        self.log_path = log_path
        vdevs: list[str] = []
        for i, iface in enumerate(phys):
            vdevs += ["--vdev", f"net_af_packet{i},iface={iface},qpairs=1,framecnt={framecnt},qdisc_bypass=1"]
        self.argv = [
            "stdbuf",
            "-oL",
            "dpdk-testpmd",
            "-l",
            "0,1",
            "--no-pci",
            "--file-prefix",
            self.prefix,
            "--huge-dir",
            str(hugedir),
            *vdevs,
            "--",
            "-i",
            "--forward-mode=io",
            "--nb-cores=1",
            f"--burst={burst}",
        ]
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def __enter__(self) -> TestPmd:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid  # stdbuf execs testpmd: same PID
        threading.Thread(target=self._reader, daemon=True).start()
        self.command("start", None, 0)
        self.counts(timeout=60)  # answered only once the ports are up and forwarding started
        if any("Fail" in line or "Error" in line for line in self.lines):
            raise BenchError(f"testpmd reported a failure:\n{self.tail()}")

    def _reader(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "a") as logf:
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                logf.write(line + "\n")
                with self.cond:
                    self.lines.append(line)
                    self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])

    def command(self, cmd: str, done: Callable[[list[str]], bool] | None, timeout: float) -> list[str]:
        """Send ``cmd``; wait until ``done`` holds for the lines printed since; return them."""
        assert self.proc is not None and self.proc.stdin is not None
        with self.cond:
            start = len(self.lines)
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()
        if done is None:
            return []
        deadline = time.monotonic() + timeout
        with self.cond:
            while not done(self.lines[start:]):
                left = deadline - time.monotonic()
                if self.proc.poll() is not None:
                    raise BenchError(f"testpmd exited ({self.proc.returncode}):\n{self.tail()}")
                if left <= 0:
                    raise BenchError(f"testpmd did not answer '{cmd}' within {timeout:.0f} s:\n{self.tail()}")
                self.cond.wait(min(left, 0.5))
            return self.lines[start:]

    @staticmethod
    def _stats_done(lines: list[str]) -> bool:
        seen_last = False
        for line in lines:
            if "NIC statistics for port 1" in line:
                seen_last = True
            elif seen_last and re.fullmatch(r"\s*#{20,}\s*", line):
                return True
        return False

    def port_stats(self, timeout: float = 10) -> dict[int, dict[str, int]]:
        lines = self.command("show port stats all", self._stats_done, timeout)
        stats: dict[int, dict[str, int]] = {}
        port = -1
        for line in lines:
            m = re.search(r"NIC statistics for port (\d+)", line)
            if m:
                port = int(m.group(1))
                stats[port] = {}
            elif port >= 0:
                for key, val in re.findall(r"([A-Za-z]+-[A-Za-z]+):\s+(\d+)", line):
                    stats[port].setdefault(key, int(val))
        return stats

    def counts(self, timeout: float = 10) -> PortCounts:
        s = self.port_stats(timeout)
        p0, p1 = s[0], s[1]
        return PortCounts(
            rx=p0["RX-packets"],
            rx_drop=p0["RX-missed"] + p0["RX-errors"],
            tx=p1["TX-packets"],
            tx_drop=p1["TX-errors"],
            extra={"rx_nombuf": p0["RX-nombuf"], "reverse_rx": p1["RX-packets"]},
        )

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None and self.proc.stdin is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.proc.stdin.write(b"stop\nquit\n")
                    self.proc.stdin.flush()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    stop_process(self.proc)
            with contextlib.suppress(OSError, ValueError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            self.proc = None
        # DPDK's leftovers: its runtime directory and this prefix's hugepage files.
        shutil.rmtree(f"/var/run/dpdk/{self.prefix}", ignore_errors=True)
        for f in glob.glob(str(self.hugedir / f"{self.prefix}*")):
            with contextlib.suppress(OSError):
                os.unlink(f)


# -- one measurement -------------------------------------------------------------------------------


@dataclass
class Snapshot:
    t: float
    a: dict[str, int]  # A-inner (generator side), kernel
    phy0: dict[str, int]  # root-ns ends, kernel
    phy1: dict[str, int]
    b: dict[str, int]  # B-inner (delivered), kernel
    fwd: PortCounts
    fwd_ticks: tuple[int, int]
    cpus: dict[int, tuple[int, int, int, int]]
    procs: dict[int, tuple[int, int, bool]]


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, gen: Path, host_a: Host, host_b: Host) -> None:
        self.args = args
        self.tmp = tmp
        self.gen = gen
        self.a, self.b = host_a, host_b
        self.phys = [host_a.outer, host_b.outer]
        self.hugedir = tmp / "hugepages"
        self.serial = 0
        self.gen_proc: subprocess.Popen[str] | None = None

    def forwarder(self, side: str) -> SppForwarder | TestPmd:
        self.serial += 1
        tag = str(self.serial)
        if side == "spp":
            return SppForwarder(self.phys, self.tmp / f"spp-{tag}", tag)
        return TestPmd(
            self.phys,
            self.hugedir,
            self.tmp / f"testpmd-{tag}.log",
            tag,
            self.args.testpmd_framecnt,
            self.args.testpmd_burst,
        )

    def snapshot(self, fwd: Forwarder) -> Snapshot:
        counts = fwd.counts()
        t = time.monotonic()
        root = net_dev(None)
        return Snapshot(
            t=t,
            a=self.a.counters(),
            phy0=root[self.phys[0]],
            phy1=root[self.phys[1]],
            b=self.b.counters(),
            fwd=counts,
            fwd_ticks=cpu_ticks(fwd.pid),
            cpus=cpu_times(),
            procs=process_ticks(),
        )

    def start_gen(self, seconds: float, rate: float) -> subprocess.Popen[str]:
        argv = ["ip", "netns", "exec", self.a.ns, "taskset", "-c", str(GEN_CPU), str(self.gen)]
        argv += [self.a.inner, f"{seconds:.3f}", f"{rate:.0f}", str(self.args.gen_burst), str(self.args.size)]
        self.gen_proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        return self.gen_proc

    def stop_gen(self) -> None:
        if self.gen_proc is not None:
            stop_process(self.gen_proc)
            self.gen_proc = None

    def finish_gen(self, proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            raise BenchError("the generator did not finish in time") from None
        finally:
            self.gen_proc = None
        if proc.returncode != 0:
            raise BenchError(f"the generator failed (exit {proc.returncode})")
        return json.loads(out.strip().splitlines()[-1])

    def measure(self, fwd: Forwarder, warmup: float, seconds: float, rate: float = 0) -> dict[str, Any]:
        """One generator run through a running forwarder; see the module docstring."""
        drain = self.args.drain
        s0 = self.snapshot(fwd)
        t_start = time.monotonic()
        proc = self.start_gen(warmup + seconds + 0.2, rate)
        snaps: list[Snapshot] = []
        for at in (warmup, warmup + seconds):
            time.sleep(max(0.0, t_start + at - time.monotonic()))
            if proc.poll() is not None:
                raise BenchError("the generator stopped early")
            snaps.append(self.snapshot(fwd))
        gen = self.finish_gen(proc, warmup + seconds + 30)
        # Drain: a forwarder that fell behind still holds frames in its receive ring. Wait until
        # B has received nothing for 0.1 s (at most 10 s), then ``--drain`` s more, so that
        # counters the forwarder updates lazily (spp's kernel ring-drop count) are current.
        last, deadline = -1, time.monotonic() + 10
        while (now := self.b.counters()["rx"]) != last and time.monotonic() < deadline:
            last = now
            time.sleep(0.1)
        time.sleep(drain)
        s3 = self.snapshot(fwd)
        s1, s2 = snaps
        return self.figures(fwd, gen, s0, s1, s2, s3)

    @staticmethod
    def figures(
        fwd: Forwarder, gen: dict[str, Any], s0: Snapshot, s1: Snapshot, s2: Snapshot, s3: Snapshot
    ) -> dict[str, Any]:
        dt = s2.t - s1.t
        delivered_w = s2.b["rx"] - s1.b["rx"]
        user = s2.fwd_ticks[0] - s1.fwd_ticks[0]
        system = s2.fwd_ticks[1] - s1.fwd_ticks[1]
        ticks = user + system
        cpu: dict[str, float] = {}
        cpu1_busy_s = 0.0
        for c in sorted(s2.cpus):
            busy = s2.cpus[c][0] - s1.cpus[c][0]
            soft = s2.cpus[c][1] - s1.cpus[c][1]
            total = max(1, s2.cpus[c][2] - s1.cpus[c][2])
            cpu[f"cpu{c}_busy"] = round(busy / total, 3)
            cpu[f"cpu{c}_softirq"] = round(soft / total, 3)
            cpu[f"cpu{c}_steal"] = round((s2.cpus[c][3] - s1.cpus[c][3]) / total, 3)
            if c == 1:
                cpu1_busy_s = busy / total * dt

        def d(key: str, part: str) -> int:
            return int(getattr(s3, part)[key] - getattr(s0, part)[key])

        offered = d("tx", "a")
        delivered = d("rx", "b")
        fwd_rx = s3.fwd.rx - s0.fwd.rx
        fwd_tx = s3.fwd.tx - s0.fwd.tx
        stages = {
            # frames the generator's veth could not hand to its peer
            "a_tx_drop": d("tx_drop", "a"),
            # reached phy0 but never taken by the forwarder: ring overflow (counted or not)
            "phy0_not_taken": d("rx", "phy0") - fwd_rx,
            "fwd_rx_drop": s3.fwd.rx_drop - s0.fwd.rx_drop,
            # taken but not sent
            "fwd_not_sent": fwd_rx - fwd_tx,
            "fwd_tx_drop": s3.fwd.tx_drop - s0.fwd.tx_drop,
            # sent but not counted on phy1 / B
            "phy1_tx_drop": d("tx_drop", "phy1"),
            "phy1_to_b_lost": d("tx", "phy1") - delivered,
        }
        for k, v in s3.fwd.extra.items():
            stages[f"fwd_{k}"] = v - s0.fwd.extra.get(k, 0)
        return {
            "forwarder": fwd.name,
            "window_s": round(dt, 3),
            "delivered_pps": round(delivered_w / dt),
            "offered_pps": round((s2.a["tx"] - s1.a["tx"]) / dt),
            "gen": gen,
            "run_offered": offered,
            "run_delivered": delivered,
            "run_lost": offered - delivered,
            "stages": stages,
            "fwd_cpu": round(ticks / CLK_TCK / dt, 3),
            "foreign_cpu": round(foreign_cpu(s1.procs, s2.procs, s1.cpus, s2.cpus, dt), 3),
            "fwd_cpu_us_per_pkt": round(ticks / CLK_TCK / max(1, delivered_w) * 1e6, 3),
            "fwd_user_us_per_pkt": round(user / CLK_TCK / max(1, delivered_w) * 1e6, 3),
            "fwd_sys_us_per_pkt": round(system / CLK_TCK / max(1, delivered_w) * 1e6, 3),
            # CPU 1 as a whole: the forwarder plus the softirq work it causes (B's veth receive)
            "cpu1_us_per_pkt": round(cpu1_busy_s / max(1, delivered_w) * 1e6, 3),
            # CPUs the hypervisor gave to someone else meanwhile (steal, summed over the CPUs)
            "steal_cpu": round(sum(v for k, v in cpu.items() if k.endswith("_steal")), 3),
            **cpu,
        }

    def disturbed(self, r: dict[str, Any]) -> bool:
        """Did other processes or the hypervisor (steal) take more than ``--disturbed-cpu``?"""
        return bool(r["foreign_cpu"] + r["steal_cpu"] > self.args.disturbed_cpu)

    def settle(self) -> None:
        time.sleep(self.args.settle)

    def wait_quiet(self) -> float:
        """Wait (up to ``--quiet-timeout`` s) until other people's processes use less than
        ``--quiet-cpu`` CPUs over half a second; return how long we waited."""
        t0 = time.monotonic()
        warned = False
        while True:
            p0, c0, t0w = process_ticks(), cpu_times(), time.monotonic()
            time.sleep(0.5)
            load = foreign_cpu(p0, process_ticks(), c0, cpu_times(), time.monotonic() - t0w)
            waited = time.monotonic() - t0
            if load < self.args.quiet_cpu or waited > self.args.quiet_timeout:
                if load >= self.args.quiet_cpu:
                    log(f"  other processes still use {load:.2f} CPUs; going ahead")
                return round(waited, 1)
            if not warned:
                log(f"  other processes use {load:.2f} CPUs; waiting for the machine to be quiet")
                warned = True

    # -- the two parts ---------------------------------------------------------------------------

    def full_rate_runs(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for i in range(self.args.runs):
            order = ("spp", "testpmd") if i % 2 == 0 else ("testpmd", "spp")
            for side in order:
                for attempt in range(1 + self.args.retries):
                    waited = self.wait_quiet()
                    with self.forwarder(side) as fwd:
                        self.settle()
                        r = self.measure(fwd, self.args.warmup, self.args.seconds)
                    r["run"] = i + 1
                    r["waited_for_quiet_s"] = waited
                    r["disturbed"] = self.disturbed(r)
                    results.append(r)
                    log(
                        f"  run {i + 1} {r['forwarder']:8s} delivered {r['delivered_pps'] / 1e3:7.1f} kpps"
                        f"  offered {r['offered_pps'] / 1e3:7.1f} kpps  lost {r['run_lost']:>8d}"
                        f"  fwd cpu {r['fwd_cpu']:.2f} ({r['fwd_cpu_us_per_pkt']:.2f} us/pkt)"
                        f"  other {r['foreign_cpu']:.2f} steal {r['steal_cpu']:.2f}"
                        + ("  DISTURBED" if r["disturbed"] else "")
                    )
                    if not r["disturbed"]:
                        break
                    if attempt < self.args.retries:
                        log("  other processes took CPU during that run: repeating it")
        return results

    def zero_drop(self, side: str, full_offered: float) -> dict[str, Any]:
        """Bisect the paced rate between 0 and the flat-out rate for zero end-to-end loss."""
        trials: list[dict[str, Any]] = []
        secs = self.args.trial_seconds
        best: dict[str, Any] | None = None
        with self.forwarder(side) as fwd:
            self.settle()

            def trial(rate: float) -> dict[str, Any]:
                """One paced run; repeated (up to ``--retries`` times) if others took CPU meanwhile."""
                for attempt in range(1 + self.args.retries):
                    self.wait_quiet()
                    # Losses count over the whole trial; rates and CPU over the part after 0.2 s.
                    r = self.measure(fwd, 0.2, secs - 0.2, rate)
                    achieved = r["run_offered"] / max(1e-9, r["gen"]["secs"])
                    t = {
                        "target_pps": round(rate),
                        "offered_pps": round(achieved),
                        "lost": r["run_lost"],
                        "stages": {k: v for k, v in r["stages"].items() if v},
                        "foreign_cpu": r["foreign_cpu"],
                        "steal_cpu": r["steal_cpu"],
                        "disturbed": self.disturbed(r),
                        "fwd_cpu_us_per_pkt": r["fwd_cpu_us_per_pkt"],
                        "cpu1_us_per_pkt": r["cpu1_us_per_pkt"],
                    }
                    trials.append(t)
                    log(
                        f"  zero-drop {fwd.name:8s} target {rate / 1e3:7.1f} kpps offered"
                        f" {achieved / 1e3:7.1f} kpps lost {r['run_lost']:>7d}"
                        f"  fwd cpu {r['fwd_cpu_us_per_pkt']:.2f} us/pkt  other {r['foreign_cpu']:.2f}"
                        + ("  DISTURBED" if t["disturbed"] else "")
                    )
                    if not t["disturbed"] or attempt == self.args.retries:
                        break
                return t

            flat = trial(0)  # flat out first: if that loses nothing, the generator is the limit
            if flat["lost"] == 0:
                best = flat
            else:
                lo, hi = 0.0, max(full_offered, flat["offered_pps"]) * 1.02
                for _ in range(self.args.zd_steps):
                    mid = (lo + hi) / 2
                    t = trial(mid)
                    if t["lost"] == 0:
                        lo = mid
                        if best is None or t["offered_pps"] > best["offered_pps"]:
                            best = t
                    else:
                        hi = mid
        return {
            "forwarder": "spp_nfv" if side == "spp" else "testpmd",
            "zero_drop_pps": best["offered_pps"] if best else 0,
            "flat_out_lossless": flat["lost"] == 0,
            "trials": trials,
        }


# -- report ----------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    dpdk = run(["dpkg-query", "-W", "-f", "${Version}", "dpdk-dev"], check=False).stdout.strip()
    return {
        "cpu": model,
        "cpus": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "dpdk": f"dpdk-dev {dpdk}" if dpdk else "unknown",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "code": code_identity(),
    }


def code_identity() -> str:
    """The commit and the hashes of the files on the phy fast path: others may be editing them."""
    root = HERE.parent
    head = run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    parts = [f"HEAD {head or '?'}"]
    for rel in (
        "spp/engine/ports/phy.py",
        "spp/engine/worker.py",
        "spp/engine/pool.py",
        "spp/engine/linux.py",
    ):
        with contextlib.suppress(OSError):
            digest = hashlib.sha256((root / rel).read_bytes()).hexdigest()[:10]
            parts.append(f"{Path(rel).name} {digest}")
    return ", ".join(parts)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per side, over the undisturbed runs if a side has any (else over all)."""
    out: dict[str, Any] = {}
    for name in ("spp_nfv", "testpmd"):
        every = [r for r in runs if r["forwarder"] == name]
        rs = [r for r in every if not r.get("disturbed")] or every
        if not rs:
            continue
        out[name] = {
            "delivered_pps": round(statistics.median(r["delivered_pps"] for r in rs)),
            "offered_pps": round(statistics.median(r["offered_pps"] for r in rs)),
            "lost_per_run": round(statistics.median(r["run_lost"] for r in rs)),
            "runs_with_loss": sum(1 for r in rs if r["run_lost"] > 0),
            "fwd_cpu": round(statistics.median(r["fwd_cpu"] for r in rs), 3),
            "fwd_cpu_us_per_pkt": round(statistics.median(r["fwd_cpu_us_per_pkt"] for r in rs), 3),
            "fwd_user_us_per_pkt": round(statistics.median(r["fwd_user_us_per_pkt"] for r in rs), 3),
            "fwd_sys_us_per_pkt": round(statistics.median(r["fwd_sys_us_per_pkt"] for r in rs), 3),
            "cpu1_busy": round(statistics.median(r.get("cpu1_busy", 0) for r in rs), 3),
            "cpu1_us_per_pkt": round(statistics.median(r["cpu1_us_per_pkt"] for r in rs), 3),
            "runs": len(rs),
            "disturbed_runs_left_out": len(every) - len(rs),
        }
    if "spp_nfv" in out and "testpmd" in out:
        ours, theirs = out["spp_nfv"], out["testpmd"]
        out["ratio_delivered"] = round(ours["delivered_pps"] / max(1, theirs["delivered_pps"]), 3)
        out["ratio_cpu_per_pkt"] = round(
            ours["fwd_cpu_us_per_pkt"] / max(1e-9, theirs["fwd_cpu_us_per_pkt"]), 3
        )
        out["ratio_cpu1_per_pkt"] = round(ours["cpu1_us_per_pkt"] / max(1e-9, theirs["cpu1_us_per_pkt"]), 3)
    return out


def text_report(result: dict[str, Any]) -> str:
    lines = [f"# {result['benchmark']}", ""]
    lines += [f"{k}: {v}" for k, v in result["machine"].items()]
    lines += [f"hugepages: {result['hugepages']}", f"generator: {result['generator']}", ""]
    hdr = (
        f"{'run':>3} {'forwarder':9} {'delivered':>10} {'offered':>10} {'run lost':>9} "
        f"{'fwd cpu':>7} {'us/pkt':>7} {'cpu1':>5} {'us/pkt':>7} {'steal':>5} {'other':>5}  losses by stage"
    )
    lines += [hdr, "-" * len(hdr)]
    for r in result["runs"]:
        stages = ", ".join(f"{k}={v}" for k, v in r["stages"].items() if v) or "-"
        mark = "*" if r.get("disturbed") else " "
        lines.append(
            f"{r['run']:>3}{mark}{r['forwarder']:9} {r['delivered_pps']:>10,} {r['offered_pps']:>10,} "
            f"{r['run_lost']:>9,} {r['fwd_cpu']:>7.2f} {r['fwd_cpu_us_per_pkt']:>7.2f} "
            f"{r.get('cpu1_busy', 0):>5.2f} {r['cpu1_us_per_pkt']:>7.2f} "
            f"{r['steal_cpu']:>5.2f} {r['foreign_cpu']:>5.2f}  {stages}"
        )
    s = result["summary"]
    lines.append("")
    for name in ("spp_nfv", "testpmd"):
        if name in s:
            m = s[name]
            lines.append(
                f"median {name:8s}: delivered {m['delivered_pps']:,} pps, offered {m['offered_pps']:,} pps, "
                f"lost/run {m['lost_per_run']:,} ({m['runs_with_loss']}/{m['runs']} runs lost frames), "
                f"fwd cpu {m['fwd_cpu']:.2f} = {m['fwd_cpu_us_per_pkt']:.2f} us/pkt"
                f" (user {m['fwd_user_us_per_pkt']:.2f} + sys {m['fwd_sys_us_per_pkt']:.2f}), "
                f"cpu1 busy {m['cpu1_busy']:.2f} = {m['cpu1_us_per_pkt']:.2f} us/pkt"
            )
    if "ratio_delivered" in s:
        lines.append(f"ratio delivered (spp_nfv / testpmd): {s['ratio_delivered']:.3f}")
        lines.append(f"ratio forwarder cpu per packet (spp_nfv / testpmd): {s['ratio_cpu_per_pkt']:.3f}")
        lines.append(f"ratio cpu1 per packet (spp_nfv / testpmd): {s['ratio_cpu1_per_pkt']:.3f}")
    busy = [r for r in result["runs"] if r.get("disturbed")]
    if busy:
        lines.append(
            f"{len(busy)} runs (marked *) were disturbed by other processes or steal; they were repeated"
            " and the medians leave them out"
        )
    lines.append(
        "columns: pps over the window; 'run lost' over the whole run; 'fwd cpu' the forwarder process;"
        " 'cpu1' CPU 1 as a whole;\n'steal' CPUs stolen by the hypervisor; 'other' CPUs used by processes"
        " not ours"
    )
    for z in result.get("zero_drop", []):
        lines.append("")
        lines.append(
            f"zero-drop {z['forwarder']:8s}: {z['zero_drop_pps']:,} pps"
            + (" (flat-out generator rate lost nothing)" if z["flat_out_lossless"] else "")
        )
        for t in z["trials"]:
            target = f"{t['target_pps']:,}" if t["target_pps"] else "flat out"
            mark = "*" if t.get("disturbed") else " "
            lines.append(
                f" {mark}target {target:>9} offered {t['offered_pps']:>9,} lost {t['lost']:>9,} "
                f"fwd {t['fwd_cpu_us_per_pkt']:.2f} us/pkt, cpu1 {t['cpu1_us_per_pkt']:.2f} us/pkt"
                f", other {t['foreign_cpu']:.2f}, steal {t['steal_cpu']:.2f}"
            )
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------


def check_environment() -> None:
    if os.geteuid() != 0:
        sys.exit("phy_vs_testpmd: must run as root (network namespaces, veth, hugepages)")
    missing = [p for p in ("ip", "dpdk-testpmd", "stdbuf", "taskset", "mount") if shutil.which(p) is None]
    if missing:
        hint = " (dpdk-testpmd: apt install dpdk-dev)"
        sys.exit(f"phy_vs_testpmd: missing programs: {', '.join(missing)}{hint}")
    if os.cpu_count() is None or (os.cpu_count() or 0) < 2:
        sys.exit("phy_vs_testpmd: needs at least 2 CPUs (generator on CPU 0, forwarder on CPU 1)")


def compile_gen(tmp: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler (cc/gcc) to build the generator; apt install gcc")
    out = tmp / "afp_gen"
    run([cc, "-O2", "-Wall", "-o", str(out), str(GEN_SOURCE)])
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per side (default %(default)s)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of traffic before measuring")
    ap.add_argument("--seconds", type=float, default=5.0, help="measurement window per run")
    ap.add_argument("--size", type=int, default=64, help="frame size in bytes, without FCS")
    ap.add_argument("--gen-burst", type=int, default=64, help="frames per sendmmsg of the generator")
    ap.add_argument("--testpmd-framecnt", type=int, default=4096, help="af_packet PMD ring frames")
    ap.add_argument("--testpmd-burst", type=int, default=32, help="testpmd --burst (its default: 32)")
    ap.add_argument("--zero-drop", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--trial-seconds", type=float, default=3.0, help="length of a zero-drop trial")
    ap.add_argument("--zd-steps", type=int, default=7, help="bisection steps of the zero-drop search")
    ap.add_argument("--settle", type=float, default=0.5, help="pause after a forwarder starts")
    ap.add_argument(
        "--drain", type=float, default=0.7, help="pause after the path has emptied, before the final counts"
    )
    ap.add_argument("--quiet-cpu", type=float, default=0.05, help="'quiet': others use fewer CPUs")
    ap.add_argument("--quiet-timeout", type=float, default=120, help="longest wait for quiet, s")
    ap.add_argument(
        "--disturbed-cpu",
        type=float,
        default=0.1,
        help="a run during which other processes or steal took more CPUs than this is repeated, left out",
    )
    ap.add_argument("--retries", type=int, default=3, help="repeats of a disturbed run")
    ap.add_argument("--keep-logs", type=Path, help="copy the processes' logs to this directory")
    ap.add_argument("--json", action="store_true", help="print the result as JSON instead of text")
    ap.add_argument("--json-file", type=Path, help="also write the result as JSON to this file")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    check_environment()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tag = str(os.getpid())
    stack = contextlib.ExitStack()
    tmp = Path(tempfile.mkdtemp(prefix="spp-phy-bench-"))
    try:
        stack.callback(shutil.rmtree, tmp, True)
        if args.keep_logs:
            stack.callback(shutil.copytree, tmp, args.keep_logs, dirs_exist_ok=True, ignore=_not_logs)
        gen = compile_gen(tmp)
        host_a = Host(ns=f"sppbench-{tag}-a", outer=f"pv{tag}a0", inner=f"pv{tag}a1")
        host_b = Host(ns=f"sppbench-{tag}-b", outer=f"pv{tag}b0", inner=f"pv{tag}b1")
        for h in (host_a, host_b):
            stack.callback(h.destroy)
            h.create()
        _mnt, huge_note = stack.enter_context(hugepages(tmp))
        log(f"hugepages: {huge_note}")
        bench = Bench(args, tmp, gen, host_a, host_b)
        stack.callback(bench.stop_gen)
        log(f"full-rate runs: {args.runs} per side, {args.warmup:g} s warm-up + {args.seconds:g} s")
        runs = bench.full_rate_runs()
        summary = summarise(runs)
        zero: list[dict[str, Any]] = []
        if args.zero_drop:
            log("zero-drop search")
            for side, name in (("spp", "spp_nfv"), ("testpmd", "testpmd")):
                zero.append(bench.zero_drop(side, summary[name]["offered_pps"]))
        result = {
            "benchmark": f"nfv phy:0 -> phy:1 vs dpdk-testpmd io (2 x net_af_packet), {args.size} B frames",
            "machine": machine(),
            "hugepages": huge_note,
            "generator": (
                f"native afp_gen (AF_PACKET, PACKET_QDISC_BYPASS, sendmmsg burst {args.gen_burst}),"
                f" pinned to CPU {GEN_CPU}"
            ),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "runs": runs,
            "summary": summary,
            "zero_drop": zero,
        }
        print(json.dumps(result, indent=1) if args.json else text_report(result))
        if args.json_file:
            args.json_file.write_text(json.dumps(result, indent=1) + "\n")
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except BenchError as e:
        log(f"phy_vs_testpmd: {e}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.close()


def _not_logs(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n in ("hugepages", "afp_gen")]


if __name__ == "__main__":
    sys.exit(main())
