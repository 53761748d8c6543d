"""Capture filters: a small, BPF-like expression language, evaluated on a whole burst at once.

spp_pcap can write only the frames that match an expression (``--filter`` at start-up, or the
``filter`` wire command at run time). tcpdump's language is big and its compiler (libpcap) is C;
this is a deliberately small subset with a hand-written parser: no shell, no ``eval``, no code
generation, bounded length and nesting, and every error names the offending word.

Grammar (keywords are case-insensitive; ``&&``, ``||`` and ``!`` are accepted for ``and``, ``or``
and ``not``; numbers are decimal or ``0x`` hex)::

    expr    := factor ( ("and" | "or") factor )*     equal precedence, left to right (tcpdump's rule:
                                                   "a or b and c" is "(a or b) and c")
    factor  := "not" factor | "(" expr ")" | prim
    prim    := "ether" ("src" | "dst" | "host") MAC
             | "ether" "proto" (NUMBER | "ip" | "ip6" | "arp")
             | "vlan" [VID]
             | "ip" [("src" | "dst") ["host" | "net"] IPV4[/LEN] | ("host" | "net") IPV4[/LEN]]
             | ["src" | "dst"] ("host" | "net") IPV4[/LEN]
             | "ip6" | "arp" | "icmp"
             | ["tcp" | "udp"] ["src" | "dst"] "port" PORT
             | "tcp" | "udp"

Semantics, and where they differ from tcpdump:

* VLAN tags (802.1Q 0x8100, 802.1ad 0x88a8, up to two) are skipped everywhere, so ``ip``,
  ``ether proto``, ``port`` ... look at the payload of tagged and untagged frames alike; ``vlan``
  tests for a tag and ``vlan N`` for the outermost tag's VID. (tcpdump only looks inside tags
  after a ``vlan`` keyword, and that keyword shifts every later offset.)
* ``ether proto`` is the EtherType after the tags. ``ip src|dst|host`` is IPv4 only and ``host``
  or ``net`` without ``ip`` mean the same (tcpdump's also match ARP's addresses). An address may
  carry a prefix length, with or without ``net``.
* ``tcp``, ``udp`` and ``port`` cover IPv4 and IPv6 (an IPv6 next header directly after the
  fixed header; extension headers are not followed). ``port`` matches the first fragment only,
  as tcpdump does. ``icmp`` is ICMP for IPv4.
* A primitive whose field lies beyond a frame's end does not match that frame, and ``not`` of it
  does. (tcpdump rejects such a frame for the whole expression, even under ``not``.)

Evaluation: the first :data:`WINDOW` bytes of every frame of the burst are gathered into one
``(n, WINDOW)`` matrix; each primitive is a handful of numpy operations over its columns (with
per-row offsets for what follows the VLAN tags and the IPv4 options), and ``and``/``or``/``not``
combine boolean vectors. The work per burst is proportional to the expression, never to the
number of packets in Python.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: Bytes of each frame the filter can see: two VLAN tags, an IPv4 header with full options, ports.
WINDOW = 14 + 8 + 60 + 4
#: The network view starts this many bytes before the network header (so the EtherType is in it
#: and the IPv4 addresses are 4-byte aligned), and holds the longest IPv4 header and the ports.
NET_FROM = 4
NET_WIDTH = NET_FROM + 60 + 4
MAX_LENGTH = 1024
MAX_DEPTH = 32

ETH_IP, ETH_IP6, ETH_ARP = 0x0800, 0x86DD, 0x0806
PROTO_ICMP, PROTO_TCP, PROTO_UDP = 1, 6, 17
PROTO_NAMES = {"ip": ETH_IP, "ip6": ETH_IP6, "arp": ETH_ARP}

_TOKEN = re.compile(r"\s*(?:(\(|\)|&&|\|\||!)|([A-Za-z0-9_.:/-]+))")
_MAC = re.compile(r"^[0-9a-fA-F]{1,2}([:-][0-9a-fA-F]{1,2}){5}$")


class FilterError(ValueError):
    """A filter expression that cannot be used; the message says where and why."""


class _Frames:
    """One burst seen through the filter: lazily derived header fields, each a vector over it.

    Every field a primitive reads sits at an even offset, so the window is also viewed as
    big-endian 16-bit columns. What follows the VLAN tags is gathered once into :attr:`net`,
    a matrix that starts :data:`NET_FROM` bytes before each frame's network header: there the
    EtherType, the IP fields and the addresses are the same columns for every frame, whatever
    its tags.
    """

    def __init__(self, window: np.ndarray, lengths: np.ndarray) -> None:
        self.win = window
        self.len = lengths.astype(np.int64)
        self.w16 = window.view(">u2")

    def has(self, end: np.ndarray | int) -> np.ndarray:
        """Frames at least ``end`` bytes long (so the bytes before ``end`` are really theirs)."""
        return self.len >= end

    @cached_property
    def tagged(self) -> np.ndarray:
        return self.has(18) & _is_tpid(self.w16[:, 6])

    @cached_property
    def vid(self) -> np.ndarray:
        return self.w16[:, 7] & 0xFFF

    @cached_property
    def l3(self) -> np.ndarray:
        """Offset of the network header: after the MACs, up to two tags and the EtherType."""
        double = self.tagged & self.has(22) & _is_tpid(self.w16[:, 8])
        return 14 + 4 * self.tagged.astype(np.int64) + 4 * double.astype(np.int64)

    @cached_property
    def net(self) -> np.ndarray:
        return _rows_at(self.win, self.l3 - NET_FROM, NET_WIDTH)

    @cached_property
    def ethertype(self) -> np.ndarray:
        """EtherType after the tags; -1 for frames too short to have one."""
        return np.where(self.has(self.l3), self.net.view(">u2")[:, 1].astype(np.int32), -1)

    @cached_property
    def ipv4(self) -> np.ndarray:
        vihl = self.net[:, 4]
        ok = (self.ethertype == ETH_IP) & self.has(self.l3 + 20)
        return ok & (vihl >> 4 == 4) & (vihl & 0xF >= 5)

    @cached_property
    def ipv6(self) -> np.ndarray:
        return (self.ethertype == ETH_IP6) & self.has(self.l3 + 40) & (self.net[:, 4] >> 4 == 6)

    @cached_property
    def l4proto(self) -> np.ndarray:
        """IPv4 protocol (byte 9) or IPv6 next header (byte 6); -1 for anything else."""
        proto = np.where(self.ipv4, self.net[:, NET_FROM + 9].astype(np.int32), -1)
        return np.where(self.ipv6, self.net[:, NET_FROM + 6].astype(np.int32), proto)

    @cached_property
    def l4(self) -> np.ndarray:
        """Offset of the transport header within :attr:`net`."""
        ihl = (self.net[:, 4] & 0xF).astype(np.int64) * 4
        return NET_FROM + np.where(self.ipv4, ihl, 40)

    @cached_property
    def ports(self) -> np.ndarray:
        return _rows_at(self.net, self.l4, 4).view(">u2")

    @cached_property
    def ports_valid(self) -> np.ndarray:
        """TCP or UDP, and not a later IPv4 fragment (which carries no ports)."""
        proto = self.l4proto
        first_fragment = ~self.ipv4 | (self.net.view(">u2")[:, (NET_FROM + 6) // 2] & 0x1FFF == 0)
        return ((proto == PROTO_TCP) | (proto == PROTO_UDP)) & first_fragment

    def port(self, which: str) -> np.ndarray:
        """Source or destination port; -1 where the frame ends before it."""
        col = 0 if which == "src" else 1
        end = self.l3 - NET_FROM + self.l4 + 2 * col + 2
        return np.where(self.has(end), self.ports[:, col].astype(np.int32), -1)

    def ip_addr(self, which: str) -> np.ndarray:
        """IPv4 source (bytes 12..15) or destination (16..19) address as an integer."""
        return self.net.view(">u4")[:, (NET_FROM + (12 if which == "src" else 16)) // 4].astype(np.int64)


def _rows_at(matrix: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Row ``i`` of the result is ``matrix[i, starts[i] : starts[i] + width]``.

    One row gather on a sliding-window view of the matrix's bytes (row ``r`` of the view is the
    ``width`` bytes at flat offset ``r``), so each frame's slice is a single contiguous copy.
    """
    n, cols = matrix.shape
    flat = np.ascontiguousarray(matrix).reshape(-1)
    windows = np.lib.stride_tricks.as_strided(flat, (len(flat) - width + 1, width), (1, 1), writeable=False)
    return windows[np.arange(n) * cols + starts]


def _is_tpid(ethertype: np.ndarray) -> np.ndarray:
    return (ethertype == 0x8100) | (ethertype == 0x88A8)


Predicate = Callable[[_Frames], np.ndarray]


@dataclass(frozen=True)
class CaptureFilter:
    """A compiled expression: ``match`` says, for a burst, which frames to keep."""

    text: str
    predicate: Predicate

    def match(self, data: np.ndarray, bufs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Boolean vector over ``bufs`` (pool buffers): True for the frames the filter selects."""
        if len(bufs) == 0:
            return np.zeros(0, bool)
        width = min(WINDOW, data.shape[1])
        window = np.zeros((len(bufs), WINDOW), np.uint8)
        window[:, :width] = data[bufs.astype(np.intp), :width]
        return np.asarray(self.predicate(_Frames(window, lengths)), bool)

    def __str__(self) -> str:
        return self.text


def compile_filter(text: str) -> CaptureFilter:
    """Parse ``text``; raise :class:`FilterError` saying what is wrong and where."""
    if not isinstance(text, str):
        raise FilterError("a filter is a string")
    if len(text) > MAX_LENGTH:
        raise FilterError(f"filter longer than {MAX_LENGTH} characters")
    tokens = _tokenize(text)
    if not tokens:
        raise FilterError("empty filter")
    parser = _Parser(tokens)
    predicate = parser.expr(0)
    if parser.pos < len(tokens):
        raise FilterError(f"unexpected '{tokens[parser.pos]}' at word {parser.pos + 1}")
    return CaptureFilter(" ".join(text.split()), predicate)


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            bad = text[pos:].strip()[:1]
            raise FilterError(f"unexpected character '{bad}' at position {pos + 1}")
        word = m.group(1) or m.group(2)
        tokens.append({"&&": "and", "||": "or", "!": "not"}.get(word, word.lower()))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent over the token list; builds the predicate as nested closures."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, what: str = "") -> str:
        tok = self.peek()
        if tok is None:
            raise FilterError(f"expression ends too early{f': expected {what}' if what else ''}")
        self.pos += 1
        return tok

    def accept(self, *words: str) -> str | None:
        if self.peek() in words:
            return self.take()
        return None

    def expr(self, depth: int) -> Predicate:
        """Factors joined by ``and``/``or``, left to right with equal precedence, as tcpdump."""
        if depth > MAX_DEPTH:
            raise FilterError(f"filter nested deeper than {MAX_DEPTH} levels")
        left = self.factor(depth)
        while (op := self.accept("and", "or")) is not None:
            right = self.factor(depth)
            left = _and(left, right) if op == "and" else _or(left, right)
        return left

    def factor(self, depth: int) -> Predicate:
        if depth > MAX_DEPTH:
            raise FilterError(f"filter nested deeper than {MAX_DEPTH} levels")
        if self.accept("not"):
            inner = self.factor(depth + 1)
            return lambda f: ~inner(f)
        if self.accept("("):
            inner = self.expr(depth + 1)
            if self.take("')'") != ")":
                raise FilterError(f"expected ')' at word {self.pos}")
            return inner
        return self.primitive()

    def primitive(self) -> Predicate:
        at = self.pos + 1
        word = self.take("a primitive such as 'ip', 'tcp port 80' or 'ether src MAC'")
        if word == "ether":
            return self.ether()
        if word == "vlan":
            vid = self.number_if_any(4095, "VLAN id")
            if vid is None:
                return lambda f: f.tagged
            return lambda f: f.tagged & (f.vid == vid)
        if word == "ip":
            which = self.accept("src", "dst", "host", "net")
            if which is None:
                return lambda f: f.ipv4
            if which in ("src", "dst"):
                self.accept("host", "net")
            return self.ip_address(which if which in ("src", "dst") else "host")
        if word in ("src", "dst"):
            if self.accept("port"):
                return self.port(None, word)
            if self.take("'host', 'net' or 'port'") not in ("host", "net"):
                raise FilterError(f"expected 'host', 'net' or 'port' after '{word}' at word {self.pos}")
            return self.ip_address(word)
        if word in ("host", "net"):
            return self.ip_address("host")
        if word == "port":
            return self.port(None, "either")
        if word in ("tcp", "udp"):
            proto = PROTO_TCP if word == "tcp" else PROTO_UDP
            direction = self.accept("src", "dst")
            if direction is not None or self.peek() == "port":
                if self.take("'port'") != "port":
                    raise FilterError(f"expected 'port' after '{word} {direction}' at word {self.pos}")
                return self.port(proto, direction or "either")
            return lambda f: f.l4proto == proto
        if word == "icmp":
            return lambda f: f.ipv4 & (f.l4proto == PROTO_ICMP)
        if word == "ip6":
            return lambda f: f.ipv6
        if word == "arp":
            return lambda f: f.ethertype == ETH_ARP
        raise FilterError(f"unknown primitive '{word}' at word {at}")

    def ether(self) -> Predicate:
        which = self.take("'src', 'dst', 'host' or 'proto' after 'ether'")
        if which == "proto":
            word = self.take("an EtherType")
            proto = PROTO_NAMES[word] if word in PROTO_NAMES else _number(word, 0xFFFF, "EtherType")
            return lambda f: f.ethertype == proto
        if which not in ("src", "dst", "host"):
            raise FilterError(f"expected 'src', 'dst', 'host' or 'proto' after 'ether', got '{which}'")
        word = self.take("a MAC address")
        if not _MAC.match(word):
            raise FilterError(f"'{word}' is not a MAC address (expected xx:xx:xx:xx:xx:xx)")
        mac = np.array([int(x, 16) for x in re.split("[:-]", word)], np.uint8)

        def at(f: _Frames, off: int) -> np.ndarray:
            return f.has(off + 6) & (f.win[:, off : off + 6] == mac).all(axis=1)

        if which == "dst":
            return lambda f: at(f, 0)
        if which == "src":
            return lambda f: at(f, 6)
        return lambda f: at(f, 0) | at(f, 6)

    def ip_address(self, which: str) -> Predicate:
        word = self.take("an IPv4 address")
        try:
            net = ipaddress.IPv4Network(word, strict=False)
        except ValueError:
            raise FilterError(f"'{word}' is not an IPv4 address (A.B.C.D or A.B.C.D/LEN)") from None
        mask, value = int(net.netmask), int(net.network_address)

        def match(f: _Frames, side: str) -> np.ndarray:
            return f.ipv4 & (f.ip_addr(side) & mask == value)

        if which == "host":
            return lambda f: match(f, "src") | match(f, "dst")
        return lambda f: match(f, which)

    def port(self, proto: int | None, direction: str) -> Predicate:
        port = _number(self.take("a port number"), 0xFFFF, "port")

        def match(f: _Frames) -> np.ndarray:
            ok = f.ports_valid if proto is None else f.ports_valid & (f.l4proto == proto)
            if direction == "either":
                return ok & ((f.port("src") == port) | (f.port("dst") == port))
            return ok & (f.port(direction) == port)

        return match

    def number_if_any(self, limit: int, what: str) -> int | None:
        word = self.peek()
        if word is None or not word[:1].isdigit():
            return None
        return _number(self.take(), limit, what)


def _number(word: str, limit: int, what: str) -> int:
    try:
        value = int(word, 16) if word.lower().startswith("0x") else int(word, 10)
    except ValueError:
        raise FilterError(f"'{word}' is not a valid {what}") from None
    if not 0 <= value <= limit:
        raise FilterError(f"{what} {word} out of range 0..{limit}")
    return value


def _and(a: Predicate, b: Predicate) -> Predicate:
    return lambda f: a(f) & b(f)


def _or(a: Predicate, b: Predicate) -> Predicate:
    return lambda f: a(f) | b(f)
