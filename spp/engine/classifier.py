"""spp_vf's classifier table (spec §4.3), looked up for a whole burst at once.

SPP keeps, per classifier and per VLAN id, a hash of destination MAC -> tx port, the VID's
default port, and the list of the VID's ports for flooding; VID 4095 is the untagged table, whose
default is the *general* default. A lookup per packet is what costs a Python forwarder its rate,
so here all of a classifier's entries are one open-addressing hash table in two numpy arrays
(64-bit keys ``(4095 - VID) << 48 | MAC``, and tx port indices), and a burst is looked up with a
handful of array operations: hash every key (one multiply and shift), gather the slots, compare.
Collisions are resolved by linear probing, walked only by the few keys that need it. The cost
does not grow with the table: a 100,000-entry table is looked up as fast as a 10-entry one
(``np.searchsorted`` on a sorted key array, tried first, took 1.4 to 6 times as long per burst on
the test machine, the more the larger the table).

The MAC in a key is the six destination bytes read as a *little-endian* integer: exactly the low
48 bits of the frame's first 64-bit word, so building the keys of a burst needs no byte swap.
An untagged frame's key is its MAC alone (VID 4095 gives 0 in the top bits).

Decision for one packet (``vid`` is 4095 when untagged; -1 means drop):

==========================================  ======================================================
the packet's VID has no table               the general default
(VID, dst MAC) is an entry                  its port
dst MAC is multicast/broadcast (I/G bit)    FLOOD: every port of the VID's table, plus the general
                                            default when the packet is tagged
otherwise (unknown unicast)                 the VID's default, else the general default
==========================================  ======================================================

A table is immutable: a change builds a new one, which the worker adopts between two bursts, so
no packet is ever classified by half an old and half a new table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UNTAGGED = 4095  # SPP stores `mac` entries with VID 4095: the table of untagged frames
DROP = -1
FLOOD = -2
_NO_TABLE = -3
_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


def parse_mac(text: str) -> int:
    """``52:54:00:12:34:56`` (any case) -> 48-bit integer; :class:`ValueError` otherwise."""
    if not _MAC_RE.match(text):
        raise ValueError(f"'{text}' is not a MAC address (expected xx:xx:xx:xx:xx:xx)")
    return int(text.replace(":", ""), 16)


def format_mac(mac: int) -> str:
    """48-bit integer -> ``52:54:00:12:34:56`` in upper case, as SPP's status shows it."""
    raw = f"{mac:012X}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


@dataclass(frozen=True)
class Entry:
    """One table entry: frames of VLAN ``vid`` (4095: untagged) to ``mac`` (``None``: default)."""

    vid: int
    mac: int | None

    @property
    def type(self) -> str:
        return "mac" if self.vid == UNTAGGED else "vlan"

    @property
    def value(self) -> str:
        """SPP's status ``value``: the MAC (or ``default``), prefixed ``VID/`` for vlan entries."""
        mac = "default" if self.mac is None else format_mac(self.mac)
        return mac if self.vid == UNTAGGED else f"{self.vid}/{mac}"

    def describe(self) -> str:
        mac = "default" if self.mac is None else format_mac(self.mac)
        return f"mac {mac}" if self.vid == UNTAGGED else f"vlan {self.vid} {mac}"


_MULT = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the product's top bits mix every bit
_EMPTY = np.uint64(0xFFFF_FFFF_FFFF_FFFF)  # no key has its top 4 bits set (VID <= 4095)
_MAC48 = np.uint64(0xFFFF_FFFF_FFFF)
_TPID_LE = np.uint16(0x0081)  # ethertype 0x8100 read as a little-endian 16-bit word


def le_mac(mac: int) -> int:
    """A MAC (as written, big-endian) -> the little-endian integer of its six bytes."""
    return int.from_bytes(mac.to_bytes(6, "big"), "little")


def table_key(vid: int, mac: int) -> int:
    return le_mac(mac) | ((UNTAGGED - vid) << 48)


class ClassifierTable:
    """The lookup structure of one classifier: entries map to indices of its tx ports."""

    def __init__(self, entries: Sequence[tuple[int, Entry]]) -> None:
        unicast = [(table_key(e.vid, e.mac), port) for port, e in entries if e.mac is not None]
        bits = max(4, (2 * len(unicast)).bit_length())  # load factor <= 1/2
        self.mask = (1 << bits) - 1
        self.shift = np.uint64(64 - bits)
        empty = int(_EMPTY)
        hk, hv = [empty] * (1 << bits), [DROP] * (1 << bits)
        self.max_probe = 0
        homes = ((np.array([k for k, _ in unicast], np.uint64) * _MULT) >> self.shift).tolist()
        for (key, port), slot in zip(unicast, homes, strict=True):
            probe = 0
            while hk[slot] != empty:
                slot = (slot + 1) & self.mask
                probe += 1
            hk[slot] = key
            hv[slot] = port
            self.max_probe = max(self.max_probe, probe)
        #: untagged frames' exact entries, little-endian MAC -> port: a lone frame's lookup
        self.untagged = {key: port for key, port in unicast if key < 1 << 48}
        self.hkeys = np.array(hk, np.uint64)
        self.hvals = np.array(hv, np.int16)
        self.size = len(entries)
        # Per VID: no table, or its default port (DROP if it has entries but no default).
        self.vid_default = np.full(UNTAGGED + 1, _NO_TABLE, np.int64)
        members: dict[int, list[int]] = {}
        for port, e in entries:
            if self.vid_default[e.vid] == _NO_TABLE:
                self.vid_default[e.vid] = DROP
            if e.mac is None:
                self.vid_default[e.vid] = port
            members.setdefault(e.vid, [])
            if port not in members[e.vid]:
                members[e.vid].append(port)
        general = int(self.vid_default[UNTAGGED])
        self.general_default = general if general >= 0 else DROP
        # Flood lists: the VID's ports, and for tagged traffic the general default as well.
        self.flood: dict[int, tuple[int, ...]] = {}
        for vid, ports in members.items():
            extra = [self.general_default] if vid != UNTAGGED and self.general_default >= 0 else []
            self.flood[vid] = tuple(ports + [p for p in extra if p not in ports])

    def flood_targets(self, vid: int) -> tuple[int, ...]:
        return self.flood.get(vid, ())

    def classify_frames(
        self, frames: FrameWords, bi: np.ndarray
    ) -> tuple[np.ndarray, bool, np.ndarray | None]:
        """Classify the frames of buffers ``bi`` (intp indices), reading only their headers.

        Returns ``(dest, clean, vid)``: destinations, whether all of them are ports (no DROP or
        FLOOD), and the VIDs (``None`` when no frame is tagged, the common case).
        """
        key = frames.w0[bi] & _MAC48
        vid = None
        tagged = frames.ethertype[bi] == _TPID_LE
        if np.count_nonzero(tagged):  # (cheaper than .any() for a burst)
            w1 = frames.w1[bi]
            tci_vid = ((w1 >> np.uint64(48)) & np.uint64(0x0F)) << np.uint64(8) | (w1 >> np.uint64(56))
            vid = np.where(tagged, tci_vid.astype(np.int64), UNTAGGED)
            key |= (UNTAGGED - vid).astype(np.uint64) << np.uint64(48)
        dest, clean = self.classify(key, vid)
        return dest, clean, vid

    def classify_macs(self, mac: np.ndarray, vid: np.ndarray) -> np.ndarray:
        """Destinations of MACs given as big-endian integers (for tests and tools)."""
        le = np.array([le_mac(int(m)) for m in mac.tolist()], np.uint64)
        key = le | ((UNTAGGED - vid.astype(np.int64)).astype(np.uint64) << np.uint64(48))
        return self.classify(key, vid.astype(np.int64))[0]

    def classify(self, key: np.ndarray, vid: np.ndarray | None) -> tuple[np.ndarray, bool]:
        """``(dest, clean)`` for table keys; ``vid`` None means every frame is untagged."""
        n = len(key)
        slots = key * _MULT
        slots >>= self.shift
        slots = slots.view(np.int64)  # < 2**bits: the same numbers, as a fast index type
        found = self.hkeys[slots]
        dest = self.hvals[slots]
        hit = found == key
        if np.count_nonzero(hit) == n:
            return dest, True
        if self.max_probe:
            # Keys that met another key in their home slot walk on (linear probing).
            pend = np.flatnonzero(~hit & (found != _EMPTY))
            for _ in range(self.max_probe):
                if len(pend) == 0:
                    break
                slots[pend] = (slots[pend] + 1) & self.mask
                f = self.hkeys[slots[pend]]
                h = f == key[pend]
                if h.any():
                    dest[pend[h]] = self.hvals[slots[pend[h]]]
                    hit[pend[h]] = True
                pend = pend[~h & (f != _EMPTY)]
        m = np.flatnonzero(~hit)
        if len(m) == 0:
            return dest, True
        v = vid[m] if vid is not None else np.full(len(m), UNTAGGED, np.int64)
        tdef = self.vid_default[v]
        multicast = (key[m] & np.uint64(1)).astype(bool)  # I/G bit: lowest bit of the first byte
        # Unknown unicast: the VID's default, else the general default (DROP if none).
        d = np.where(tdef >= 0, tdef, self.general_default)
        d = np.where(multicast, FLOOD, d)
        dest[m] = np.where(tdef == _NO_TABLE, self.general_default, d)
        return dest, bool(dest[m].min() >= 0)


@dataclass(frozen=True)
class FrameWords:
    """Column views of the pool's data, so that the headers of a burst are 1-D gathers:
    each buffer's first 64-bit word (destination MAC, 2 bytes of source), its ethertype word
    (bytes 12-13) and its second 64-bit word (ethertype and TCI)."""

    w0: np.ndarray
    ethertype: np.ndarray
    w1: np.ndarray

    @classmethod
    def of(cls, data: np.ndarray) -> FrameWords:
        return cls(data.view(np.uint64)[:, 0], data.view(np.uint16)[:, 6], data.view(np.uint64)[:, 1])
