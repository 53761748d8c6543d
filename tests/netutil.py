"""Test helpers for real network plumbing: veth pairs in throw-away namespaces, raw frame I/O.

Everything runs real kernel objects (needs root). Names are unique per test run and per test, and
every helper removes what it made *by name* in a ``finally``, so a failing test leaves nothing
behind. All commands are argv lists; no shell ever sees an interface name or a frame.

The frame sender and capturer run as small Python programs under ``ip netns exec``: that puts
them in the namespace without touching this process's namespace, and lets a test inject traffic
from "the wire" while the code under test runs here.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_seq = itertools.count()

#: Locally administered source MAC that the tests put on every frame they make, so stray
#: traffic (IPv6 neighbour discovery, LLDP...) can be told apart and ignored.
TEST_SRC = bytes.fromhex("02aa55000001")
TEST_DST = bytes.fromhex("02aa55000002")
ETH_P_TEST = 0x88B5  # IEEE local experimental


def is_root() -> bool:
    return os.geteuid() == 0


def _run(argv: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=timeout)


def unique_tag() -> str:
    """A short tag for names of namespaces and links, unique on this machine for the test run.

    The run token ``<pid>x`` (which the leak check in :mod:`tests.leakcheck` looks for), a random
    part and a counter: the random part keeps two copies of this module (imported as ``netutil``
    and as ``tests.netutil``) from handing out the same names. At most 11 characters, so
    ``spt<tag>h`` fits IFNAMSIZ.
    """
    return f"{os.getpid() % 100000}x{secrets.token_hex(1)}{next(_seq) % 1000}"


def link_exists(name: str, ns: str | None = None) -> bool:
    argv = (
        ["ip", "link", "show", "dev", name] if ns is None else ["ip", "-n", ns, "link", "show", "dev", name]
    )
    return _run(argv, check=False).returncode == 0


def run_in_netns(
    ns: str, argv: Sequence[str], check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside network namespace ``ns`` and wait for it."""
    return _run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout)


def _netns_argv(ns: str | None, argv: Sequence[str]) -> list[str]:
    return list(argv) if ns is None else ["ip", "netns", "exec", ns, *argv]


def disable_ipv6(iface: str, ns: str | None = None) -> None:
    """Keep the kernel quiet on a test link: no router solicitations, MLD reports or DAD probes."""
    if ns is None:
        p = Path(f"/proc/sys/net/ipv6/conf/{iface}/disable_ipv6")
        if p.exists():
            p.write_text("1")
    else:
        run_in_netns(ns, ["sysctl", "-q", "-w", f"net.ipv6.conf.{iface}.disable_ipv6=1"], check=False)


@dataclass
class VethNs:
    """A veth pair: ``host_if`` in this namespace, ``ns_if`` inside namespace ``ns``."""

    ns: str
    host_if: str
    ns_if: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_in_netns(self.ns, argv, check=check)

    def set_ns_link(self, up: bool) -> None:
        self.run(["ip", "link", "set", "dev", self.ns_if, "up" if up else "down"])

    def send(self, frames: Sequence[bytes]) -> None:
        """Inject ``frames`` into the wire from the namespace side; returns when all are sent."""
        send_frames(frames, self.ns_if, ns=self.ns)

    def capture(self, count: int, timeout: float = 5.0, src: bytes | None = TEST_SRC) -> Capture:
        cap = Capture(self.ns_if, count, timeout=timeout, src=src, ns=self.ns)
        self.procs.append(cap.proc)
        return cap


@contextlib.contextmanager
def veth_pair_in_netns(
    host_ip: str | None = None, ns_ip: str | None = None, mtu: int | None = None, offloads: bool = False
) -> Iterator[VethNs]:
    """Create a namespace and a veth pair across it, both ends up; delete it all on exit.

    ``host_ip``/``ns_ip`` take CIDR strings such as ``"10.9.0.1/24"``. IPv6 is disabled on both
    ends before they come up, so the links carry only what the test sends.

    Unless ``offloads``, checksum and segmentation offloads are turned off on both ends, so the
    link behaves like a wire: with them on, the kernel hands a veth 64 KB TCP aggregates and
    frames whose checksum is left to "hardware", which a raw-socket forwarder then passes on
    broken.
    """
    tag = unique_tag()
    ns = f"sppt{tag}"
    host_if, ns_if = f"spt{tag}h", f"spt{tag}n"
    v = VethNs(ns, host_if, ns_if)
    try:
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns])
        disable_ipv6(host_if)
        disable_ipv6(ns_if, ns)
        if mtu is not None:
            _run(["ip", "link", "set", "dev", host_if, "mtu", str(mtu)])
            v.run(["ip", "link", "set", "dev", ns_if, "mtu", str(mtu)])
        if host_ip:
            _run(["ip", "addr", "add", host_ip, "dev", host_if])
        if ns_ip:
            v.run(["ip", "addr", "add", ns_ip, "dev", ns_if])
        if not offloads:
            off = ["tx", "off", "tso", "off", "gso", "off", "gro", "off"]
            _run(["ethtool", "-K", host_if, *off], check=False)
            v.run(["ethtool", "-K", ns_if, *off], check=False)
        v.run(["ip", "link", "set", "dev", "lo", "up"])
        v.run(["ip", "link", "set", "dev", ns_if, "up"])
        _run(["ip", "link", "set", "dev", host_if, "up"])
        yield v
    finally:
        for p in v.procs:
            _stop(p)
        _run(["ip", "netns", "del", ns], check=False)
        # Deleting the namespace destroys its end and with it the pair; make sure of it by name.
        if link_exists(host_if):
            _run(["ip", "link", "del", "dev", host_if], check=False)


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=5)
    for f in (p.stdin, p.stdout, p.stderr):
        if f is not None:
            f.close()


# -- frames ------------------------------------------------------------------------------------


def make_frame(
    seq: int, size: int, dst: bytes = TEST_DST, src: bytes = TEST_SRC, vlan: tuple[int, ...] = ()
) -> bytes:
    """A test frame of exactly ``size`` bytes: ``dst src [tags] 0x88b5 seq(4) pattern``.

    ``vlan`` lists tags outermost first as ``(tpid, tci)`` pairs flattened, e.g.
    ``(0x88a8, 100, 0x8100, 7)``. The payload pattern depends on ``seq`` so a misplaced byte or
    a swapped frame shows up in a byte comparison.
    """
    tags = b"".join(struct.pack("!HH", vlan[i], vlan[i + 1]) for i in range(0, len(vlan), 2))
    head = dst + src + tags + struct.pack("!HI", ETH_P_TEST, seq)
    if size < len(head):
        raise ValueError(f"frame of {size} bytes cannot hold its {len(head)}-byte header")
    body = bytes((seq + i) & 0xFF for i in range(size - len(head)))
    return head + body


def frame_seq(frame: bytes) -> int:
    """The sequence number of a :func:`make_frame` frame (any number of VLAN tags)."""
    off = 12
    while struct.unpack_from("!H", frame, off)[0] in (0x8100, 0x88A8):
        off += 4
    return struct.unpack_from("!I", frame, off + 2)[0]


_SEND_SCRIPT = r"""
import socket, struct, sys, time, errno
iface = sys.argv[1]
raw = sys.stdin.buffer.read()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((iface, 0))
off = 0
while off < len(raw):
    (n,) = struct.unpack_from("<H", raw, off)
    frame = raw[off + 2: off + 2 + n]
    off += 2 + n
    while True:
        try:
            s.send(frame)
            break
        except OSError as e:
            if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                raise
            time.sleep(0.001)
"""


def send_frames(frames: Sequence[bytes], iface: str, ns: str | None = None) -> None:
    """Send raw frames out of ``iface`` (in namespace ``ns``), in order, one ``send`` each."""
    payload = b"".join(struct.pack("<H", len(f)) + f for f in frames)
    argv = _netns_argv(ns, [sys.executable, "-c", _SEND_SCRIPT, iface])
    r = subprocess.run(argv, input=payload, capture_output=True, timeout=60)
    if r.returncode:
        raise RuntimeError(f"frame sender failed: {r.stderr.decode(errors='replace')}")


_CAPTURE_SCRIPT = r"""
import json, select, socket, struct, sys, time
iface, count, timeout, src = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), bytes.fromhex(sys.argv[4])
SOL_PACKET, PACKET_AUXDATA, PACKET_OUTGOING = 263, 8, 4
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
try:
    s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE: hold a whole test burst
except OSError:
    pass
s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
s.bind((iface, 3))
print("ready", flush=True)
out = []
deadline = time.monotonic() + timeout
while len(out) < count:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([s], [], [], left)[0]:
        break
    data, anc, _flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(32))
    if addr[2] == PACKET_OUTGOING:
        continue
    for level, kind, cdata in anc:
        if level == SOL_PACKET and kind == PACKET_AUXDATA:
            status, _len, _snap, _mac, _net, tci, tpid = struct.unpack_from("IIIHHHH", cdata)
            if status & (1 << 4):  # the kernel took the outer VLAN tag off: put it back
                tpid = tpid if status & (1 << 6) else 0x8100
                data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
    if src and data[6:12] != src:
        continue
    out.append(data.hex())
json.dump(out, sys.stdout)
"""


class SendInBackground:
    """Send frames from a thread while the test reads: a slow reader must not need a huge ring."""

    def __init__(self, v: VethNs, frames: Sequence[bytes]) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(v, frames), daemon=True)
        self._thread.start()

    def _run(self, v: VethNs, frames: Sequence[bytes]) -> None:
        try:
            v.send(frames)
        except BaseException as e:
            self.error = e

    def join(self) -> None:
        self._thread.join(timeout=60)
        if self.error is not None:
            raise self.error


class Capture:
    """Frames arriving on ``iface`` (incoming only, VLAN tags restored), captured by a subprocess.

    Construction returns once the capture socket is bound, so anything sent afterwards is seen.
    ``frames()`` waits until ``count`` matching frames came or ``timeout`` passed.
    """

    def __init__(
        self,
        iface: str,
        count: int,
        timeout: float = 5.0,
        src: bytes | None = TEST_SRC,
        ns: str | None = None,
    ) -> None:
        argv = _netns_argv(
            ns, [sys.executable, "-c", _CAPTURE_SCRIPT, iface, str(count), str(timeout), (src or b"").hex()]
        )
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            _stop(self.proc)
            raise RuntimeError(f"capture on {iface} did not start: {line!r}")

    def frames(self) -> list[bytes]:
        try:
            out, err = self.proc.communicate(timeout=60)
        finally:
            _stop(self.proc)
        if self.proc.returncode:
            raise RuntimeError(f"capture failed: {err.decode(errors='replace')}")
        return [bytes.fromhex(h) for h in json.loads(out)]

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        _stop(self.proc)


def host_send(frames: Sequence[bytes], iface: str) -> None:
    """Send frames from this process through the kernel's normal transmit path on ``iface``."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
        s.bind((iface, 0))
        for f in frames:
            s.send(f)


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def packet_sockets_on(ifindex: int) -> list[dict[str, str]]:
    """The packet sockets bound to ``ifindex``, from /proc/net/packet (one dict per socket)."""
    lines = Path("/proc/net/packet").read_text().splitlines()
    keys = lines[0].split()
    rows = [dict(zip(keys, ln.split(), strict=False)) for ln in lines[1:]]
    return [r for r in rows if r.get("Iface") == str(ifindex)]
