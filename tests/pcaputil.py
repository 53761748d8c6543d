"""Helpers for the spp_pcap tests: realistic mixed traffic, and outside readers of capture files.

The frames are real protocol headers (Ethernet, 802.1Q/802.1ad, ARP, IPv4 with and without
options and fragments, IPv6, TCP, UDP, ICMP) with addresses and ports drawn from small sets, so
filters hit and miss in every combination. Readers are the real tools: the ``lz4`` CLI, tcpdump
and (if installed) tshark, so a file that only our own code could read fails the tests.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
from pathlib import Path

import lz4.frame

from spp.engine.pcapfile import GLOBAL_HEADER

MACS = [bytes.fromhex(m) for m in ("02aa55000001", "02aa55000002", "02bb00000003", "ffffffffffff")]
IPS = ["10.0.0.1", "10.0.0.2", "10.1.2.3", "192.168.7.9"]
PORTS = [22, 53, 80, 443, 8080]


def _ipv4(src: str, dst: str, proto: int, payload: bytes, options: bytes = b"", frag: int = 0) -> bytes:
    ihl = 5 + len(options) // 4
    total = ihl * 4 + len(payload)
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        total,
        1,
        frag,
        64,
        proto,
        0,
        bytes(map(int, src.split("."))),
        bytes(map(int, dst.split("."))),
    )
    return hdr + options + payload


def _ipv6(next_header: int, payload: bytes) -> bytes:
    return (
        struct.pack(
            "!IHBB16s16s",
            0x60000000,
            len(payload),
            next_header,
            64,
            b"\xfe\x80" + bytes(14),
            bytes(15) + b"\x01",
        )
        + payload
    )


def _l4(rng: random.Random, proto: int) -> bytes:
    sport, dport = rng.choice(PORTS), rng.choice(PORTS)
    body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 6, 40, 200])))
    if proto == 6:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x10, 1024, 0, 0) + body
    if proto == 17:
        return struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body
    return struct.pack("!BBHHH", 8, 0, 0, 1, 1) + body  # ICMP echo request


def make_traffic(count: int, seed: int = 1, vlan: bool = False) -> list[bytes]:
    """``count`` frames of mixed protocols; with ``vlan``, some carry one or two tags."""
    rng = random.Random(seed)
    frames = []
    for _ in range(count):
        dst, src = rng.choice(MACS), rng.choice(MACS[:3])
        kind = rng.choice(["tcp", "udp", "icmp", "tcp6", "udp6", "arp", "raw", "frag", "opts", "runt"])
        if kind in ("tcp", "udp", "icmp", "frag", "opts"):
            proto = {"tcp": 6, "udp": 17, "icmp": 1}.get(kind, rng.choice([6, 17]))
            options = b"\x01\x01\x01\x00" * rng.choice([1, 10]) if kind == "opts" else b""
            frag = rng.choice([0x0010, 0x2000]) if kind == "frag" else 0  # later fragment / MF only
            l3 = _ipv4(rng.choice(IPS), rng.choice(IPS), proto, _l4(rng, proto), options, frag)
            etype = 0x0800
        elif kind in ("tcp6", "udp6"):
            proto = 6 if kind == "tcp6" else 17
            l3, etype = _ipv6(proto, _l4(rng, proto)), 0x86DD
        elif kind == "arp":
            l3 = struct.pack(
                "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src, bytes([10, 0, 0, 1]), bytes(6), bytes(4)
            )
            etype = 0x0806
        elif kind == "runt":
            frames.append(dst + src[: rng.randrange(0, 6)])  # shorter than an Ethernet header
            continue
        else:
            l3, etype = bytes(rng.randrange(256) for _ in range(46)), 0x88B5
        tags = b""
        if vlan and rng.random() < 0.5:
            tags = struct.pack("!HH", rng.choice([0x8100, 0x88A8]), rng.choice([5, 100, 4095]))
            if rng.random() < 0.3:
                tags += struct.pack("!HH", 0x8100, rng.choice([7, 100]))
        frame = dst + src + tags + struct.pack("!H", etype) + l3
        if kind in ("tcp", "udp") and rng.random() < 0.1:
            frame = frame[: 14 + len(tags) + 20 + 2]  # cut inside the ports
        frames.append(frame.ljust(60, b"\0") if len(frame) >= 14 and rng.random() < 0.5 else frame)
    return frames


# -- outside readers -----------------------------------------------------------------------------


def lz4_cli_decompress(path: Path, out: Path) -> bytes:
    """Decompress with the ``lz4`` command-line tool (an independent LZ4-frame reader)."""
    subprocess.run(
        ["lz4", "-d", "-q", "-f", str(path), str(out)], check=True, capture_output=True, timeout=60
    )
    return out.read_bytes()


def lz4_py_decompress(path: Path) -> bytes:
    return lz4.frame.decompress(path.read_bytes())


def classic_frames(raw: bytes) -> list[tuple[int, bytes]]:
    """``(stamp in µs, frame)`` of a classic little-endian µs pcap stream."""
    assert raw[:24] == GLOBAL_HEADER, raw[:24].hex()
    out, pos = [], 24
    while pos < len(raw):
        sec, usec, incl, orig = struct.unpack_from("<IIII", raw, pos)
        assert incl == orig
        out.append((sec * 1_000_000 + usec, raw[pos + 16 : pos + 16 + incl]))
        pos += 16 + incl
    assert pos == len(raw)
    return out


def tcpdump_count(path: Path, expr: str = "") -> int:
    """How many packets tcpdump reads from ``path`` (matching ``expr``); fails on a bad file."""
    argv = ["tcpdump", "-n", "-r", str(path), "-w", "/dev/null", "--count"]
    r = subprocess.run([*argv, *([expr] if expr else [])], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # "N packets" on stdout with --count (tcpdump >= 4.99)
    return int(r.stdout.split()[0])


def tcpdump_hex(path: Path) -> list[bytes]:
    """The frames as tcpdump prints them (``-xx``): an independent parse of the file."""
    r = subprocess.run(
        ["tcpdump", "-n", "-r", str(path), "-xx", "-tt"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    frames: list[bytes] = []
    cur: list[str] = []
    for line in r.stdout.splitlines():
        if line.startswith("\t0x"):
            cur.extend(line.split(":", 1)[1].split())  # -xx: hex only, no ASCII column
        else:
            if cur:
                frames.append(bytes.fromhex("".join(cur)))
            cur = []
    if cur:
        frames.append(bytes.fromhex("".join(cur)))
    return frames


def tshark_frames(path: Path) -> list[tuple[str, bytes]] | None:
    """``(epoch time as tshark prints it, frame)`` per packet; None if tshark is not installed."""
    if shutil.which("tshark") is None:
        return None
    r = subprocess.run(
        ["tshark", "-r", str(path), "-T", "json", "-x", "-j", "frame"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out = []
    for pkt in json.loads(r.stdout or "[]"):
        layers = pkt["_source"]["layers"]
        out.append((layers["frame"]["frame.time_epoch"], bytes.fromhex(layers["frame_raw"][0])))
    return out


def tcpdump_selects(path: Path, expr: str) -> list[int]:
    """Indices of the frames of ``path`` that tcpdump's filter ``expr`` selects. The file must be
    written by ``tests.test_engine_ports.write_pcap``: record ``i`` is stamped ``1000 + i`` s."""
    r = subprocess.run(
        ["tcpdump", "-n", "-tt", "-r", str(path), expr], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return sorted({int(ln.split(".")[0]) - 1000 for ln in r.stdout.splitlines() if ln[:1].isdigit()})
