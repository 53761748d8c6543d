"""Real TCP and UDP traffic between two network namespaces, for the offload tests.

The endpoints are small Python programs run with ``ip netns exec`` (argv lists, no shell): a TCP
receiver that hashes what it reads, a sender that streams a deterministic pseudo-random byte
stream and hashes what it sent, a UDP receiver that checks every datagram's contents. Each prints
one JSON line. The namespaces keep the kernel's default offloads (TSO, GSO, checksum offload), so
the forwarder in between sees 64 KB aggregates and partial checksums, as it would in real use.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tests.netutil import run_in_netns

_TCP_RECV = r"""
import hashlib, json, socket, sys
port = int(sys.argv[1])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(1)
srv.settimeout(float(sys.argv[2]))
print("listening", flush=True)
conn, _ = srv.accept()
conn.settimeout(float(sys.argv[2]))
h, n = hashlib.sha256(), 0
buf = bytearray(1 << 20)
mv = memoryview(buf)
while True:
    k = conn.recv_into(buf)
    if not k:
        break
    h.update(mv[:k])
    n += k
conn.sendall(b"ok")
conn.close()
print(json.dumps({"bytes": n, "sha256": h.hexdigest()}), flush=True)
"""

_TCP_SEND = r"""
import hashlib, json, random, socket, sys, time
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(total)
block = rnd.randbytes(1 << 20)
s = socket.create_connection((host, port), timeout=float(sys.argv[4]))
h, sent, i = hashlib.sha256(), 0, 0
t0 = time.monotonic()
while sent < total:
    # Vary the block so that a misplaced or repeated segment changes the hash.
    piece = (block[i % 997 :] + block[: i % 997])[: min(len(block), total - sent)]
    s.sendall(piece)
    h.update(piece)
    sent += len(piece)
    i += 1
s.shutdown(socket.SHUT_WR)
ack = s.recv(2)
took = time.monotonic() - t0
print(json.dumps({"bytes": sent, "sha256": h.hexdigest(), "ack": ack.decode(), "seconds": took}), flush=True)
"""

_UDP_RECV = r"""
import json, socket, struct, sys, time
port, count, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("0.0.0.0", port))
s.settimeout(timeout)
print("listening", flush=True)
seen, bad = set(), 0
try:
    while len(seen) < count:
        d, _ = s.recvfrom(65536)
        seq, size = struct.unpack_from("!II", d)
        body = bytes((seq + j) & 0xFF for j in range(size - 8))
        if len(d) != size or d[8:] != body:
            bad += 1
        else:
            seen.add(seq)
except TimeoutError:
    pass
print(json.dumps({"received": len(seen), "bad": bad}), flush=True)
"""

_UDP_SEND = r"""
import socket, struct, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for seq in range(count):
    size = 64 + (seq * 997) % (1472 - 64 + 1)
    d = struct.pack("!II", seq, size) + bytes((seq + j) & 0xFF for j in range(size - 8))
    s.sendto(d, (host, port))
    if seq % 20 == 19:
        time.sleep(0.002)  # a modest rate: about 10,000 datagrams a second at most
"""


@dataclass
class Result:
    sent: dict[str, object]
    received: dict[str, object]


def _spawn(ns: str, script: str, args: Sequence[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready(p: subprocess.Popen[str]) -> None:
    assert p.stdout is not None
    line = p.stdout.readline()
    if line.strip() != "listening":
        p.kill()
        raise RuntimeError(f"receiver did not start: {line!r} {p.stderr.read() if p.stderr else ''}")


def _last_json(p: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"timed out; stdout {out!r} stderr {err!r}") from None
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise AssertionError(f"no result (rc {p.returncode}): {out!r} {err!r}")
    return json.loads(lines[-1])


def tcp_transfer(
    sender_ns: str, receiver_ns: str, receiver_ip: str, nbytes: int, port: int = 5201, timeout: float = 120
) -> Result:
    """Stream ``nbytes`` over one TCP connection; both ends' byte counts and sha256."""
    rx = _spawn(receiver_ns, _TCP_RECV, [str(port), str(timeout)])
    try:
        _ready(rx)
        tx = _spawn(sender_ns, _TCP_SEND, [receiver_ip, str(port), str(nbytes), str(timeout)])
        sent = _last_json(tx, timeout)
        received = _last_json(rx, timeout)
    finally:
        for p in (rx,):
            if p.poll() is None:
                p.kill()
                p.wait()
    return Result(sent, received)


def udp_datagrams(
    sender_ns: str,
    receiver_ns: str,
    receiver_ip: str,
    count: int = 1000,
    port: int = 5301,
    timeout: float = 5,
) -> dict[str, object]:
    """Send ``count`` datagrams of 64..1472 bytes; what the receiver got intact."""
    rx = _spawn(receiver_ns, _UDP_RECV, [str(port), str(count), str(timeout)])
    try:
        _ready(rx)
        time.sleep(0.05)
        argv = [sys.executable, "-c", _UDP_SEND, receiver_ip, str(port), str(count)]
        r = run_in_netns(sender_ns, argv, timeout=60)
        assert r.returncode == 0, r.stderr
        return _last_json(rx, timeout + 30)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()


def ping(ns: str, ip: str, size: int = 56, count: int = 3) -> subprocess.CompletedProcess[str]:
    return run_in_netns(
        ns, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", "-M", "do", "-s", str(size), ip], check=False
    )


_SNIFF = r"""
import hashlib, json, socket, struct, sys
iface, src, dst = sys.argv[1:4]
port, total, timeout = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
# A whole 20 MB stream in wire-size frames (kernel truesize ~2x) must fit while this Python loop
# lags on a loaded machine: SO_RCVBUFFORCE (root) lifts net.core.rmem_max.
s.setsockopt(socket.SOL_SOCKET, 33, 256 << 20)
s.bind((iface, 0))
s.settimeout(timeout)
print("listening", flush=True)
sip, dip = socket.inet_aton(src), socket.inet_aton(dst)
data = bytearray(total)
have = bytearray(total)
isn = None
got = 0
try:
    while got < total:
        f = s.recv(70000)
        if len(f) < 54 or f[12:14] != b"\x08\x00" or f[23] != 6 or f[26:30] != sip or f[30:34] != dip:
            continue
        ihl = (f[14] & 15) * 4
        t = 14 + ihl
        if struct.unpack_from("!H", f, t + 2)[0] != port:
            continue
        seq = struct.unpack_from("!I", f, t + 4)[0]
        flags = f[t + 13]
        if flags & 2:
            isn = seq
            continue
        if isn is None:
            continue
        tot = struct.unpack_from("!H", f, 16)[0]
        body = f[t + (f[t + 12] >> 4) * 4 : 14 + tot]
        off = (seq - isn - 1) & 0xFFFFFFFF
        if not body or off >= total:
            continue
        body = body[: total - off]
        new = len(body) - have[off : off + len(body)].count(1)
        data[off : off + len(body)] = body
        have[off : off + len(body)] = b"\x01" * len(body)
        got += new
except TimeoutError:
    pass
packets, drops = struct.unpack("II", s.getsockopt(263, 6, 8))  # PACKET_STATISTICS
out = {"bytes": got, "sha256": hashlib.sha256(data).hexdigest(), "sniffer_drops": drops}
print(json.dumps(out), flush=True)
"""


class StreamSniffer:
    """A passive listener in ``ns`` that rebuilds one TCP stream (``src -> dst:port``) from the
    frames it sees on ``iface`` and hashes it: a check that mirrored copies carry every byte."""

    def __init__(self, ns: str, iface: str, src: str, dst: str, nbytes: int, port: int = 5201) -> None:
        args = [iface, src, dst, str(port), str(nbytes), "20"]
        self.proc = _spawn(ns, _SNIFF, args)
        _ready(self.proc)

    def result(self, timeout: float = 60) -> dict[str, object]:
        """``{"bytes", "sha256"}`` of the stream rebuilt, and ``"sniffer_drops"``: frames the
        listener's own socket lost (the observer's, not the panel's)."""
        return _last_json(self.proc, timeout)


_UDP_GSO_SEND = r"""
import socket, struct, sys
host, port, sends, seg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, seg)  # UDP_SEGMENT: the kernel sends one aggregate per call
per = 45
seq = 0
for _ in range(sends):
    buf = bytearray()
    for _ in range(per):
        buf += struct.pack("!II", seq, seg) + bytes((seq + j) & 0xFF for j in range(seg - 8))
        seq += 1
    s.sendto(bytes(buf), (host, port))
"""


def udp_gso_datagrams(
    sender_ns: str, receiver_ns: str, receiver_ip: str, sends: int = 40, port: int = 5302
) -> tuple[int, dict[str, object]]:
    """Send ``sends`` UDP GSO aggregates (UDP_SEGMENT, 45 datagrams of 1,400 bytes each); return
    the number of datagrams and what the receiver got intact."""
    count = sends * 45
    rx = _spawn(receiver_ns, _UDP_RECV, [str(port), str(count), "5"])
    try:
        _ready(rx)
        time.sleep(0.05)
        argv = [sys.executable, "-c", _UDP_GSO_SEND, receiver_ip, str(port), str(sends), "1400"]
        r = run_in_netns(sender_ns, argv, timeout=60)
        assert r.returncode == 0, r.stderr
        return count, _last_json(rx, 40)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
