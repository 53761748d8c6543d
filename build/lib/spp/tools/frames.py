"""Test frames built per burst: a template written once, then patched with numpy.

A generated frame is Ethernet [802.1Q] / IPv4 / UDP / signature / zero padding. The signature
is what makes loss, reordering and latency measurable at the receiver::

    offset 0   "SPPG" magic (4 bytes)
    offset 4   sequence number, uint64 little-endian (0, 1, 2, ... per generator run)
    offset 12  transmit time, uint64 little-endian, ns since the epoch (CLOCK_REALTIME)

Fields given as ranges (``10.0.0.1-10.0.0.9``, ``1000-1009``, sizes ``64-128``) step by one per
packet and wrap, all driven by the sequence number (packet *s* carries ``lo + s % count``), which
is what pktgen-dpdk's range mode does. Every per-burst operation is a handful of array stores:
broadcast the template into the burst's buffers, write the varying columns, recompute the IPv4
checksum only when something in that header varies. No Python per packet.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"SPPG"
SIG_LEN = 20
ETH_HLEN = 14
VLAN_HLEN = 4
IP_HLEN = 20
UDP_HLEN = 8
MIN_SIZE_UNTAGGED = ETH_HLEN + IP_HLEN + UDP_HLEN + SIG_LEN  # 62
MAX_SIZE = 2048

_MAGIC_U8 = np.frombuffer(MAGIC, np.uint8)
_SHIFT6 = np.array([40, 32, 24, 16, 8, 0], np.uint64)
_SHIFT4 = np.array([24, 16, 8, 0], np.uint64)
_SHIFT2 = np.array([8, 0], np.uint64)


class FieldError(ValueError):
    """A field value that cannot be used; the message names the option and the value."""


@dataclass(frozen=True)
class Span:
    """``lo`` and how many consecutive values (1: a fixed field)."""

    lo: int
    count: int = 1

    @property
    def varies(self) -> bool:
        return self.count > 1

    def values(self, seqs: np.ndarray) -> np.ndarray:
        return np.uint64(self.lo) + seqs % np.uint64(self.count)


def _span(text: str, parse: type | object, name: str, limit: int) -> Span:
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo = parse(lo_s.strip())  # type: ignore[operator]
        hi = parse(hi_s.strip()) if sep else lo  # type: ignore[operator]
    except ValueError:
        raise FieldError(f"invalid {name} '{text}'") from None
    if not 0 <= lo <= hi <= limit:
        raise FieldError(f"invalid {name} range '{text}': expected LOW-HIGH with LOW <= HIGH")
    return Span(lo, hi - lo + 1)


def _parse_mac(text: str) -> int:
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", text):
        raise ValueError(text)
    return int(text.replace(":", ""), 16)


def _parse_ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def parse_mac_span(text: str) -> Span:
    return _span(text, _parse_mac, "mac", (1 << 48) - 1)


def parse_ip_span(text: str) -> Span:
    try:
        return _span(text, _parse_ip, "IPv4 address", (1 << 32) - 1)
    except ipaddress.AddressValueError:
        raise FieldError(f"invalid IPv4 address '{text}'") from None


def parse_port_span(text: str) -> Span:
    return _span(text, int, "UDP port", 65535)


def parse_size_span(text: str) -> Span:
    return _span(text, int, "frame size", MAX_SIZE)


def mac_text(value: int) -> str:
    return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))


def mac_bytes(text: str) -> bytes:
    try:
        return _parse_mac(text).to_bytes(6, "big")
    except ValueError:
        raise FieldError(f"invalid MAC address '{text}'") from None


@dataclass(frozen=True)
class FrameSpec:
    dst_mac: Span
    src_mac: Span
    dst_ip: Span
    src_ip: Span
    dst_port: Span
    src_port: Span
    size: Span
    vlan: int | None = None
    pcp: int = 0
    ttl: int = 64

    @property
    def l2_len(self) -> int:
        return ETH_HLEN + (VLAN_HLEN if self.vlan is not None else 0)

    @property
    def sig_offset(self) -> int:
        return self.l2_len + IP_HLEN + UDP_HLEN

    @property
    def min_size(self) -> int:
        return self.sig_offset + SIG_LEN

    def check(self) -> None:
        if self.size.lo < self.min_size:
            raise FieldError(
                f"frame size {self.size.lo} too small: these headers and the signature need {self.min_size}"
            )
        if self.vlan is not None and not 0 <= self.vlan <= 4095:
            raise FieldError(f"invalid VLAN id {self.vlan} (0..4095)")
        if not 0 <= self.pcp <= 7:
            raise FieldError(f"invalid VLAN priority {self.pcp} (0..7)")


def ipv4_checksum(header: bytes) -> int:
    words = struct.unpack(f"!{len(header) // 2}H", header)
    s = sum(words)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


class FrameBuilder:
    """Fills pool buffers with the frames of ``spec`` for given sequence numbers."""

    def __init__(self, spec: FrameSpec) -> None:
        spec.check()
        self.spec = spec
        s = spec
        self.max_size = s.size.lo + s.size.count - 1
        self.ip_off = s.l2_len
        self.udp_off = self.ip_off + IP_HLEN
        self.sig_off = s.sig_offset
        self.ip_varies = s.size.varies or s.src_ip.varies or s.dst_ip.varies
        t = bytearray(self.max_size)
        t[0:6] = s.dst_mac.lo.to_bytes(6, "big")
        t[6:12] = s.src_mac.lo.to_bytes(6, "big")
        if s.vlan is not None:
            t[12:16] = struct.pack("!HH", 0x8100, s.pcp << 13 | s.vlan)
        t[s.l2_len - 2 : s.l2_len] = b"\x08\x00"
        size = s.size.lo
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            size - s.l2_len,
            0,
            0x4000,  # don't fragment
            s.ttl,
            17,
            0,
            s.src_ip.lo.to_bytes(4, "big"),
            s.dst_ip.lo.to_bytes(4, "big"),
        )
        ip = ip[:10] + ipv4_checksum(ip).to_bytes(2, "big") + ip[12:]
        t[self.ip_off : self.udp_off] = ip
        # UDP checksum 0: "not computed", allowed for IPv4, and what keeps the template fixed.
        t[self.udp_off : self.sig_off] = struct.pack(
            "!HHHH", s.src_port.lo, s.dst_port.lo, size - s.l2_len - IP_HLEN, 0
        )
        t[self.sig_off : self.sig_off + 4] = MAGIC
        self.template = np.frombuffer(bytes(t), np.uint8)

    def sizes(self, seqs: np.ndarray) -> np.ndarray:
        return self.spec.size.values(seqs)

    def mean_size(self) -> float:
        return self.spec.size.lo + (self.spec.size.count - 1) / 2

    def fill(
        self, data: np.ndarray, lengths: np.ndarray, bufs: np.ndarray, seqs: np.ndarray, now_ns: int
    ) -> None:
        """Write frames ``seqs`` into buffers ``bufs`` (same length), stamped ``now_ns``."""
        s = self.spec
        n = len(bufs)
        if s.size.varies:
            sizes = self.sizes(seqs)
            width = int(sizes.max())
        else:
            sizes = None
            width = s.size.lo
        data[bufs, :width] = self.template[:width]
        if s.dst_mac.varies:
            data[bufs, 0:6] = _be_bytes(s.dst_mac.values(seqs), _SHIFT6)
        if s.src_mac.varies:
            data[bufs, 6:12] = _be_bytes(s.src_mac.values(seqs), _SHIFT6)
        ip = self.ip_off
        if s.src_ip.varies:
            data[bufs, ip + 12 : ip + 16] = _be_bytes(s.src_ip.values(seqs), _SHIFT4)
        if s.dst_ip.varies:
            data[bufs, ip + 16 : ip + 20] = _be_bytes(s.dst_ip.values(seqs), _SHIFT4)
        udp = self.udp_off
        if s.src_port.varies:
            data[bufs, udp : udp + 2] = _be_bytes(s.src_port.values(seqs), _SHIFT2)
        if s.dst_port.varies:
            data[bufs, udp + 2 : udp + 4] = _be_bytes(s.dst_port.values(seqs), _SHIFT2)
        if sizes is not None:
            l3 = sizes - np.uint64(s.l2_len)
            data[bufs, ip + 2 : ip + 4] = _be_bytes(l3, _SHIFT2)
            data[bufs, udp + 4 : udp + 6] = _be_bytes(l3 - np.uint64(IP_HLEN), _SHIFT2)
            # Bytes past a frame's own end were copied from the template; they are not sent.
        if self.ip_varies:
            hdr = data[bufs, ip : ip + IP_HLEN].astype(np.uint32)
            hdr[:, 10:12] = 0
            total = (hdr[:, 0::2] << 8 | hdr[:, 1::2]).sum(axis=1)
            total = (total & 0xFFFF) + (total >> 16)
            total = (total & 0xFFFF) + (total >> 16)
            csum = ~total & 0xFFFF
            data[bufs, ip + 10] = (csum >> 8).astype(np.uint8)
            data[bufs, ip + 11] = (csum & 0xFF).astype(np.uint8)
        sig = self.sig_off
        data[bufs, sig + 4 : sig + 12] = seqs.astype("<u8").view(np.uint8).reshape(n, 8)
        data[bufs, sig + 12 : sig + 20] = np.full(n, now_ns, "<u8").view(np.uint8).reshape(n, 8)
        lengths[bufs] = sizes if sizes is not None else width


def _be_bytes(values: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    return ((values[:, None] >> shifts) & np.uint64(0xFF)).astype(np.uint8)


@dataclass
class Signatures:
    """What the receiver found in a burst: generated frames' sequence numbers and send times."""

    seqs: np.ndarray
    sent_ns: np.ndarray
    others: int  # frames without a signature (not ours)


def read_signatures(data: np.ndarray, lengths: np.ndarray, bufs: np.ndarray) -> Signatures:
    """Find the signature of each frame, untagged (offset 42) or VLAN-tagged (offset 46)."""
    n = len(bufs)
    lens = lengths[bufs].astype(np.int64)
    found = np.zeros(n, bool)
    seqs = np.zeros(n, np.uint64)
    sent = np.zeros(n, np.uint64)
    for off in (ETH_HLEN + IP_HLEN + UDP_HLEN, ETH_HLEN + VLAN_HLEN + IP_HLEN + UDP_HLEN):
        sig = data[bufs, off : off + SIG_LEN]
        hit = (lens >= off + SIG_LEN) & (sig[:, :4] == _MAGIC_U8).all(axis=1) & ~found
        if hit.any():
            rows = np.ascontiguousarray(sig[hit])
            seqs[hit] = rows[:, 4:12].copy().view("<u8").ravel()
            sent[hit] = rows[:, 12:20].copy().view("<u8").ravel()
            found |= hit
    return Signatures(seqs[found], sent[found], int(n - found.sum()))
