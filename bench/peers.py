"""The forwarders the wire benchmarks compare, each joining the same two namespaces.

Namespace A holds ``10.99.0.1/24`` on its veth end, namespace B ``10.99.0.2/24``; the veths' other
ends (``outer``) stay in the root namespace and are what each forwarder joins:

* ``veth``: no forwarder at all, a veth pair straight from A to B (``10.99.1.1`` -> ``10.99.1.2``,
  :func:`target`): the floor any forwarder adds to;
* ``bridge``: a Linux bridge over the two outer ends (the kernel forwards in softirq);
* ``testpmd``: dpdk-testpmd, io mode, ``net_af_packet`` on both, one forwarding core (busy-polls);
* ``nfv``: our spp_nfv patching ``phy:0 <-> phy:1``;
* ``nfv-poll``, ``nfv-rings-poll``: the same, every nfv started with ``--busy-poll-us 20000``
  (keeps polling 20 ms after the last packet: awake across a ping every 10 ms, asleep when no
  traffic flows);
* ``py-relay``: ``bench/tools/py_relay.py``, the simplest Python relay there is (plain sockets,
  busy-polling ``recv_into`` and one ``send`` per frame, nothing else): the floor under any
  Python forwarder here, for latency (it busy-polls even when idle, so its idle CPU is a core);
* ``nfv-tap``, ``nfv-tap-poll``: nfv patching ``phy:0 <-> tap:1``, the TAP moved into B and given
  B's address (B's veth loses it meanwhile): a container's or namespace's usual way onto the panel;
* ``nfv-vhost``, ``nfv-vhost-poll``: nfv patching ``phy:0 <-> vhost:1``; on that socket,
  dpdk-testpmd's ``net_virtio_user`` relays (io mode, busy-polling) to its ``net_tap``, moved into
  B with B's address: a VM's or container's path through the panel, with a peer that adds a few µs;
* ``nfv-l2fwd``, ``nfv-l2fwd-poll``: the same as ``nfv-vhost`` with our own peer instead of
  testpmd: ``spp-l2fwd virtio_user:1 tap:0`` (a container's VNF on the panel), its TAP in B
  (with ``-poll``, l2fwd busy-polls as the nfv does);
* ``nfv-rings``: phy -> ring -> nfv -> ring -> phy: nfv 1 moves ``phy:0 -> ring:0``,
  ``ring:1 -> phy:1`` and back (``phy:1 -> ring:2``, ``ring:3 -> phy:0``), nfv 2 moves
  ``ring:0 -> ring:1`` and ``ring:2 -> ring:3``: every packet crosses two processes twice.

Each is a context manager yielding the PIDs whose CPU time is the forwarder's (none for the
bridge, which works in the kernel's softirq).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from phy_vs_testpmd import Host, TestPmd, run

from spp.instance import tap_ifname
from spp.integrations.testbed import Secondary, Testbed

A_IP, B_IP = "10.99.0.1", "10.99.0.2"
DIRECT_A_IP, DIRECT_B_IP = "10.99.1.1", "10.99.1.2"
SIDES = ("veth", "bridge", "testpmd", "nfv", "nfv-rings")
BUSY_POLL_US = 20_000  # the nfv-poll side's --busy-poll-us


def target(side: str) -> str:
    """The address A reaches B at through ``side``."""
    return DIRECT_B_IP if side == "veth" else B_IP


def make_hosts(tag: str) -> tuple[Host, Host]:
    a = Host(f"spbA{tag}", f"spbA{tag}o", f"spbA{tag}i").create()
    b = Host(f"spbB{tag}", f"spbB{tag}o", f"spbB{tag}i").create()
    a.exec(["ip", "addr", "add", f"{A_IP}/24", "dev", a.inner])
    b.exec(["ip", "addr", "add", f"{B_IP}/24", "dev", b.inner])
    return a, b


def set_offloads(hosts: tuple[Host, Host], on: bool) -> None:
    """TSO/GSO/GRO and checksum offload on every veth end (the inner ones in their namespaces)."""
    state = "on" if on else "off"
    feats = ["tso", state, "gso", state, "gro", state, "tx", state, "rx", state]
    for h in hosts:
        h.exec(["ethtool", "-K", h.inner, *feats])
        run(["ethtool", "-K", h.outer, *feats], check=False)


def process_cpu(pid: int) -> float:
    """CPU seconds all threads of ``pid`` ran (the scheduler's ns clock)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


SECONDARIES = {b"spp.processes.nfv", b"spp.processes.vf", b"spp.processes.mirror"}


def secondary_pids(bed: Testbed) -> list[int]:
    prefix = bed.prefix.encode()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if {b"spp.processes.nfv", b"spp.processes.vf", b"spp.processes.mirror"} & set(
            argv
        ) and prefix in argv:
            pids.append(int(d.name))
    return pids


@contextlib.contextmanager
def forwarder(side: str, a: Host, b: Host, tmp: Path, hugedir: Path | None, tag: str) -> Iterator[list[int]]:
    if side == "veth":
        ends = (f"spvA{tag}", f"spvB{tag}")
        peer = ["peer", "name", ends[1], "netns", b.ns]
        run(["ip", "link", "add", ends[0], "netns", a.ns, "type", "veth", *peer])
        try:
            for h, end, ip in ((a, ends[0], DIRECT_A_IP), (b, ends[1], DIRECT_B_IP)):
                h.exec(["sysctl", "-qw", f"net.ipv6.conf.{end}.disable_ipv6=1"])
                h.exec(["ip", "addr", "add", f"{ip}/24", "dev", end])
                h.exec(["ip", "link", "set", end, "up"])
            yield []
        finally:
            a.exec(["ip", "link", "del", ends[0]])
    elif side == "bridge":
        br = f"spbr{tag}"
        run(["ip", "link", "add", br, "type", "bridge"])
        try:
            Path(f"/proc/sys/net/ipv6/conf/{br}/disable_ipv6").write_text("1")
            for h in (a, b):
                run(["ip", "link", "set", h.outer, "master", br])
            run(["ip", "link", "set", br, "up"])
            yield []
        finally:
            run(["ip", "link", "del", br], check=False)
    elif side == "testpmd":
        pmd = TestPmd([a.outer, b.outer], hugedir or tmp, tmp / "testpmd.log", tag, 4096, 32)
        if hugedir is None:  # anonymous memory: no hugepage reservation to race with others over
            at = pmd.argv.index("--huge-dir")
            pmd.argv[at : at + 2] = ["--no-huge", "-m", "1024"]
        with pmd:
            yield [pmd.pid]
    elif side == "py-relay":
        relay = Path(__file__).parent / "tools" / "py_relay.py"
        proc = subprocess.Popen([sys.executable, str(relay), a.outer, b.outer])
        try:
            time.sleep(0.3)
            if proc.poll() is not None:
                raise RuntimeError(f"py_relay.py exited with {proc.returncode}")
            yield [proc.pid]
        finally:
            proc.kill()
            proc.wait()
    elif side in ("nfv", "nfv-rings", "nfv-poll", "nfv-rings-poll"):
        bed = Testbed(ifaces=[a.outer, b.outer], nb_rings=4, prefix=f"spb{tag}", log_dir=tmp)
        with bed:
            poll = {"--busy-poll-us": str(BUSY_POLL_US)} if side.endswith("-poll") else None
            nfv = bed.launch_nfv(1, lcores="0,1", app=poll)
            if not side.startswith("nfv-rings"):
                nfv.patch("phy:0", "phy:1")
                nfv.patch("phy:1", "phy:0")
            else:
                for port in ("ring:0", "ring:1", "ring:2", "ring:3"):
                    nfv.add(port)
                for src, dst in (
                    ("phy:0", "ring:0"),
                    ("ring:1", "phy:1"),
                    ("phy:1", "ring:2"),
                    ("ring:3", "phy:0"),
                ):
                    nfv.patch(src, dst)
                nfv2 = bed.launch_nfv(2, lcores="0,1", app=poll)
                for port in ("ring:0", "ring:1", "ring:2", "ring:3"):
                    nfv2.add(port)
                nfv2.patch("ring:0", "ring:1")
                nfv2.patch("ring:2", "ring:3")
                nfv2.forward()
            nfv.forward()
            time.sleep(0.2)
            yield secondary_pids(bed)
    elif side in ("nfv-tap", "nfv-tap-poll"):
        bed = Testbed(ifaces=[a.outer], nb_rings=1, prefix=f"spb{tag}", log_dir=tmp)
        with bed, _moved_to(b, tap_ifname(bed.prefix, 1), a) as tap:
            poll = {"--busy-poll-us": str(BUSY_POLL_US)} if side.endswith("-poll") else None
            nfv = bed.launch_nfv(1, lcores="0,1", app=poll)
            nfv.add("tap:1")
            tap.wait_and_move()
            nfv.patch("phy:0", "tap:1")
            nfv.patch("tap:1", "phy:0")
            nfv.forward()
            time.sleep(0.2)
            yield secondary_pids(bed)
    elif side in ("nfv-vhost", "nfv-vhost-poll"):
        with _vhost_nfv(side, a, b, tmp, tag, f"spbvt{tag}") as (bed, nfv, tap, socks):
            # testpmd's forwarding lcore is CPU 0, the nfv's worker CPU 1 (its lcore after 0)
            argv = [
                "stdbuf",
                "-oL",
                "dpdk-testpmd",
                "-l",
                "1,0",
                "--main-lcore",
                "1",
                "--no-huge",
                "-m",
                "512",
                "--no-pci",
            ]
            vdev = f"net_virtio_user0,path={socks}/sock1,queue_size=1024"
            argv += ["--file-prefix", f"spbtp{tag}", "--vdev", vdev]
            argv += ["--vdev", f"net_tap0,iface={tap.name}", "--", "--forward-mode=io", "--auto-start"]
            argv += ["--total-num-mbufs=8192"]
            log = open(tmp / "testpmd-vhost.log", "wb")  # noqa: SIM115 - closed below
            pmd = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
            try:
                end = time.monotonic() + 30  # (its link check alone may take 9 s)
                while b"Press enter to exit" not in Path(log.name).read_bytes():
                    if pmd.poll() is not None or time.monotonic() > end:
                        raise RuntimeError(f"dpdk-testpmd did not start forwarding: see {log.name}")
                    time.sleep(0.1)
                # Only now: net_tap opens its queues by the interface's name, in its namespace.
                tap.wait_and_move()
                nfv.patch("phy:0", "vhost:1")
                nfv.patch("vhost:1", "phy:0")
                nfv.forward()
                time.sleep(0.2)
                yield secondary_pids(bed)  # (testpmd's busy core is the peer's, not the panel's)
            finally:
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    assert pmd.stdin is not None
                    pmd.stdin.write(b"\n")  # stop: its port statistics go to the log
                    pmd.stdin.close()
                    pmd.wait(5)
                pmd.kill()
                pmd.wait()
                log.close()
    elif side in ("nfv-l2fwd", "nfv-l2fwd-poll"):
        with _vhost_nfv(side, a, b, tmp, tag, f"spbvl{tag}") as (bed, nfv, tap, socks):
            argv = [
                sys.executable,
                "-m",
                "spp.tools.l2fwd",
                "virtio_user:1",
                "tap:0",
                "--vhost-dir",
                str(socks),
            ]
            if side.endswith("-poll"):
                argv += ["--busy-poll-us", str(BUSY_POLL_US)]
            argv += ["--tap-name", f"tap:0={tap.name}"]
            fwd = bed._spawn("spp-l2fwd", argv)  # (the bed stops it)
            tap.wait_and_move()
            nfv.patch("phy:0", "vhost:1")
            nfv.patch("vhost:1", "phy:0")
            nfv.forward()
            time.sleep(0.5)
            if fwd.poll() is not None:
                raise RuntimeError(f"spp-l2fwd exited with {fwd.returncode}: {bed.log('spp-l2fwd')}")
            yield [*secondary_pids(bed), fwd.pid]
    elif side in ("vf", "vf-poll", "vf-cls", "vf-cls-poll"):
        # spp_vf on one lcore: forward components phy:0 -> phy:1 and back; with "cls", the way
        # to B through a classifier instead (B's MAC -> phy:1)
        bed = Testbed(ifaces=[a.outer, b.outer], nb_rings=1, prefix=f"spb{tag}", log_dir=tmp)
        with bed:
            extra = ["--busy-poll-us", str(BUSY_POLL_US)] if side.endswith("-poll") else []
            vf = bed.start_worker("vf", 1, lcores="0,1", extra=extra)
            for name, rx, tx in (("fwd0", "phy:0", "phy:1"), ("fwd1", "phy:1", "phy:0")):
                kind = "classifier" if name == "fwd0" and "-cls" in side else "forward"
                vf.wire(name, 1, kind, [rx], [tx])
            if "-cls" in side:
                b_mac = b.exec(["cat", f"/sys/class/net/{b.inner}/address"]).stdout.strip()
                vf.table_add(b_mac, "phy:1")  # (A's ARP broadcasts flood to the table's ports)
            time.sleep(0.2)
            yield secondary_pids(bed)
    elif side in ("mirror", "mirror-poll"):
        # spp_mirror on one lcore: phy:0 -> phy:1 and back, each through a mirror component
        # whose copies go to a ring (tap-as-a-service's shape: every frame also to a monitor)
        bed = Testbed(ifaces=[a.outer, b.outer], nb_rings=2, prefix=f"spb{tag}", log_dir=tmp)
        with bed:
            extra = ["--busy-poll-us", str(BUSY_POLL_US)] if side.endswith("-poll") else []
            mirror = bed.start_worker("mirror", 1, lcores="0,1", extra=extra)
            mirror.wire("mir0", 1, "mirror", ["phy:0"], ["phy:1", "ring:0"])
            mirror.wire("mir1", 1, "mirror", ["phy:1"], ["phy:0", "ring:1"])
            time.sleep(0.2)
            yield secondary_pids(bed)
    else:
        raise ValueError(side)


@contextlib.contextmanager
def _vhost_nfv(
    side: str, a: Host, b: Host, tmp: Path, tag: str, tap_name: str
) -> Iterator[tuple[Testbed, Secondary, _MovedIn, Path]]:
    """A bed whose nfv has ``phy:0`` (A's end) and ``vhost:1`` (socket ``<socks>/sock1``),
    busy-polling for a ``-poll`` side, and a TAP ``tap_name`` a peer will create, to be moved
    into B: ``(bed, nfv, tap, socks)``."""
    socks = tmp / f"socks{tag}"
    socks.mkdir(exist_ok=True)
    bed = Testbed(ifaces=[a.outer], nb_rings=1, prefix=f"spb{tag}", log_dir=tmp)
    with bed, _moved_to(b, tap_name, a) as tap:
        app = {"--vhost-dir": str(socks)}
        if side.endswith("-poll"):
            app["--busy-poll-us"] = str(BUSY_POLL_US)
        nfv = bed.launch_nfv(1, lcores="0,1", app=app)
        nfv.add("vhost:1")
        yield bed, nfv, tap, socks


class _MovedIn:
    """An interface someone else creates (a TAP a forwarder opens), to be moved into namespace
    ``host`` and given B's address there, while B's veth gives it up (see :func:`_moved_to`)."""

    def __init__(self, host: Host, name: str, peer: Host) -> None:
        self.host, self.name, self.peer = host, name, peer
        self.moved = False

    def wait_and_move(self, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while not Path(f"/sys/class/net/{self.name}").exists():
            if time.monotonic() > end:
                raise RuntimeError(f"{self.name} never appeared")
            time.sleep(0.05)
        run(["ip", "link", "set", "dev", self.name, "netns", self.host.ns])
        self.host.exec(["ip", "addr", "del", f"{B_IP}/24", "dev", self.host.inner])
        self.moved = True
        self.host.exec(["sysctl", "-qw", f"net.ipv6.conf.{self.name}.disable_ipv6=1"])
        self.host.exec(["ip", "addr", "add", f"{B_IP}/24", "dev", self.name])
        self.host.exec(["ip", "link", "set", self.name, "up"])
        self.peer.exec(["ip", "neigh", "flush", "dev", self.peer.inner])  # B's address, a new MAC


@contextlib.contextmanager
def _moved_to(host: Host, name: str, peer: Host) -> Iterator[_MovedIn]:
    """B's address on interface ``name`` (once moved in) for the block; B's veth gets it back."""
    moved = _MovedIn(host, name, peer)
    try:
        yield moved
    finally:
        if moved.moved:
            host.exec(["ip", "addr", "add", f"{B_IP}/24", "dev", host.inner])
            peer.exec(["ip", "neigh", "flush", "dev", peer.inner])


def ping_times(a: Host, count: int, interval: float, dst: str = B_IP) -> list[float]:
    """Round-trip times in µs of ``count`` pings from A to B, ``interval`` s apart (the first few,
    which include ARP resolution, are left out)."""
    warm = 5
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            a.ns,
            "ping",
            "-n",
            "-c",
            str(count + warm),
            "-i",
            str(interval),
            "-W",
            "1",
            dst,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=count * interval + 60,
    ).stdout
    times = [float(line.split("time=")[1].split()[0]) * 1000 for line in out.splitlines() if "time=" in line]
    return times[warm:]
