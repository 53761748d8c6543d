"""Benchmark: TCP between two QEMU guests through our spp_nfv, side by side with dpdk-testpmd's
net_vhost in io forwarding, the same two guests.

    sudo PYTHONPATH=. python bench/guest_tcp.py [--runs 3] [--mbytes 64] [--image DIR] [--testpmd-tso]

Topology::

    guest 1 (QEMU, TCG) ==sock1==> back-end ==sock2==> guest 2 (QEMU, TCG)
    back-end: spp_nfv [vhost:1 <-> vhost:2] (--vhost-client), or
              dpdk-testpmd --vdev net_vhost0,iface=sock1,client=1 --vdev net_vhost1,...
              --forward-mode=io (one forwarding lcore)

Each run starts the back-end, boots both guests on it (``spp vm image``, QEMU as the vhost-user
socket server: a running guest cannot move to a back-end that lacks a feature it negotiated, so
each side gets guests of its own), moves ``--mbytes`` MiB of random data guest 1 -> guest 2 with
busybox nc (sha256 checked at both ends) and stops everything; runs alternate between the sides.
The time is the sender's, read from the guest's /proc/uptime around ``nc`` (the receiver's socket
buffer is small beside the transfer). Beside the rate, the CPU-seconds the back-end process used
over the transfer. testpmd's vhost PMD leaves host TSO off unless ``--testpmd-tso`` (``tso=1``).
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
from spp.integrations.vm import manager
from spp.integrations.vm.image import READY_MARK, build_image
from spp.integrations.vm.qemu import Nic, VmSpec, default_mac, resolve_accel
from tests.testpmd import Testpmd

GUEST_NET = "10.88.0"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Guests:
    """Two guests on the sockets of ``socks``, their state under ``root``."""

    def __init__(self, root: Path, socks: Path, image: Path, accel: str, mbytes: int) -> None:
        self.socks = socks
        self.root = root
        self.mbytes = mbytes
        self.specs = {}
        for vm_id in (1, 2):
            nic = Nic(
                vm_id, str(socks / f"sock{vm_id}"), default_mac(vm_id, vm_id), f"{GUEST_NET}.{vm_id}/24"
            )
            self.specs[vm_id] = VmSpec(
                vm_id,
                root / str(vm_id),
                [nic],
                accel=accel,
                server=True,
                kernel=image / "vmlinuz",
                initrd=image / "initrd.img",
            )
        self.port = 6000

    def __enter__(self) -> Guests:
        """Start both (their back-end must connect for QEMU to go on), wait for both to boot,
        and write the data to send; ``self.sha`` is its sha256."""
        try:
            for spec in self.specs.values():
                manager.start(spec, timeout=120)
            wait_for(self.booted, 600, "both guests to boot", interval=0.5)
            make = f"dd if=/dev/urandom of=/tmp/tx bs=64k count={16 * self.mbytes} 2>/dev/null"
            self.sha = self.sh(1, f"{make}; sha256sum < /tmp/tx").split()[0]
            deadline = time.monotonic() + 60
            while True:  # the links come up a moment after the handshakes
                try:
                    self.sh(1, f"ping -c 1 -W 2 {GUEST_NET}.2", timeout=30)
                    return self
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def booted(self) -> bool:
        return all(
            s.serial_log.exists() and READY_MARK.encode() in s.serial_log.read_bytes()
            for s in self.specs.values()
        )

    def sh(self, vm_id: int, command: str, timeout: float = 600) -> str:
        r = manager.exec_in(self.root, vm_id, command, timeout=timeout, boot_timeout=600)
        if r.status:
            raise RuntimeError(f"vm {vm_id}: {command!r} -> {r.status}: {r.output}")
        return r.output

    def stop(self) -> None:
        for vm in manager.list_vms(self.root):
            manager.stop(self.root, vm["id"])

    def transfer(self, backend_pid: int) -> tuple[float, float]:
        """(Mbit/s, back-end CPU-seconds) of one transfer guest 1 -> guest 2."""
        self.port += 1
        hold = "[ -p /tmp/hold ] || mkfifo /tmp/hold"
        self.sh(
            2, f"rm -f /tmp/rx; {hold}; nc -l -p {self.port} <> /tmp/hold > /tmp/rx & echo $! > /tmp/rx.pid"
        )
        cpu0 = cpu_seconds(backend_pid)
        up = "cut -d' ' -f1 /proc/uptime"
        out = self.sh(1, f"a=$({up}); nc {GUEST_NET}.2 {self.port} < /tmp/tx; b=$({up}); echo $a $b")
        cpu = cpu_seconds(backend_pid) - cpu0
        self.sh(2, "while kill -0 $(cat /tmp/rx.pid) 2>/dev/null; do sleep 0.2; done")
        got = self.sh(2, "sha256sum < /tmp/rx").split()[0]
        if got != self.sha:
            raise RuntimeError(f"guest 2 received data with sha256 {got}, sent {self.sha}")
        a, b = (float(x) for x in out.split()[-2:])
        return 8 * (self.mbytes << 20) / (b - a) / 1e6, cpu


def ours(tmp: Path, image: Path, args: argparse.Namespace) -> tuple[float, float]:
    socks = tmp / "socks"
    socks.mkdir()
    with Testbed(nb_rings=1, log_dir=tmp / "bed") as bed:
        nfv = bed.start_nfv(1, extra=["--vhost-client", "--vhost-dir", str(socks)])
        for port in ("vhost:1", "vhost:2"):
            nfv.add(port)
        nfv.patch("vhost:1", "vhost:2")
        nfv.patch("vhost:2", "vhost:1")
        nfv.forward()
        with Guests(tmp / "vms", socks, image, args.accel, args.mbytes) as guests:
            pid = next(p for name, p in bed.pids().items() if "nfv" in name)
            rate, cpu = guests.transfer(pid)
        st = nfv.port_stats()
        sw = sum(st[p]["xstats"].get("sw_gso", 0) for p in ("vhost:1", "vhost:2"))
        print(f"  ours: vhost:1 rx {st['vhost:1']['rx']} frames, software gso {sw}", file=sys.stderr)
    return rate, cpu


def testpmd(tmp: Path, image: Path, args: argparse.Namespace) -> tuple[float, float]:
    socks = tmp / "socks"
    socks.mkdir()
    extra = ",tso=1" if args.testpmd_tso else ""
    vdev1 = f"net_vhost1,iface={socks}/sock2,client=1{extra}"
    eal = ["-l", "0,1", "--no-huge", "-m", "512", "--vdev", vdev1]
    with Testpmd(f"net_vhost0,iface={socks}/sock1,client=1{extra}", "io", tmp / "testpmd.log", eal=eal) as tp:
        tp.wait_output("testpmd>")
        tp.command("start")
        tp.wait_output("packet forwarding - ports")
        with Guests(tmp / "vms", socks, image, args.accel, args.mbytes) as guests:
            rate, cpu = guests.transfer(tp.proc.pid)
        print(f"  testpmd: {tp.stop_stats()}", file=sys.stderr)
    return rate, cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--mbytes", type=int, default=64)
    p.add_argument("--image", type=Path, help="guest image dir (default: build one in a temporary dir)")
    p.add_argument("--accel", default="tcg", help="tcg (default) or kvm")
    p.add_argument("--testpmd-tso", action="store_true", help="net_vhost with tso=1")
    args = p.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"ours": [], "testpmd": []}
    with tempfile.TemporaryDirectory(prefix="spp-bench-guest-") as tmp_name:
        tmp = Path(tmp_name)
        image = args.image
        if image is None:
            image = tmp / "image"
            build_image(image)
        args.accel = resolve_accel(args.accel)
        for run in range(args.runs):
            order = ("ours", "testpmd") if run % 2 == 0 else ("testpmd", "ours")
            for side in order:
                run_dir = tmp / f"{side}{run}"
                run_dir.mkdir()
                r = ours(run_dir, image, args) if side == "ours" else testpmd(run_dir, image, args)
                results[side].append(r)
                print(f"run {run} {side}: {r[0]:.1f} Mbit/s, back-end {r[1]:.2f} CPU-s", file=sys.stderr)
    med = {k: statistics.median(r for r, _ in v) for k, v in results.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"guest -> guest TCP, {args.mbytes} MiB per run, {args.runs} runs each, {args.accel} guests")
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, load average {load}, commit {commit}")
    for side in ("ours", "testpmd"):
        rates = ", ".join(f"{r:.0f}" for r, _ in results[side])
        print(
            f"{side:8s} median {med[side]:.0f} Mbit/s ({rates}), back-end CPU {cpu[side]:.2f} s per transfer"
        )
    print(f"ratio ours/testpmd {med['ours'] / med['testpmd']:.2f}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
