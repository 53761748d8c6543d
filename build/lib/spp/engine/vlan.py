"""802.1Q tag operations of spp_vf ports (``add_vlantag VID PCP``, ``del_vlantag``), on whole bursts.

SPP's ``port_capability.c`` edits one mbuf at a time. Here a burst is edited with a few numpy
operations, whatever its size: the frames that need a tag inserted are gathered as one
``[n, width]`` window (``width`` = the longest of them), written back four bytes further on, and
the tag is stored in front; stripping is the same move the other way. Bytes past a frame's own
length are moved too, which is harmless: they are not part of the frame (``pool.lengths`` says
where it ends) and the window never leaves the buffer.

Semantics (SPP's, spec §4.4):

* ``add``: a frame whose ethertype is 0x8100 gets only its TCI rewritten (re-tagged, not
  stacked); any other frame gets a 4-byte 802.1Q header inserted after the source MAC.
  TCI = ``PCP << 13 | VID``. Unlike SPP, ``add_vlantag VID`` without a PCP means PCP 0, not 7.
* ``del``: a frame with ethertype 0x8100 loses its outer tag; any other frame is unchanged.
* SPP also wrote a CRC past the data; frames here carry no FCS, so nothing of the kind is done.

Frames shorter than an Ethernet header are left alone, and a frame that would not fit its
buffer with a tag more is returned as refused (the caller frees and counts it). Frames in large
buffers (longer than an ordinary one) are moved one numpy copy each; there are few of them. A
frame's offload metadata moves with its headers: ``csum_start`` and ``hdr_len`` follow the tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from spp.engine.pool import BufferPool

ETH_HLEN = 14
VLAN_HLEN = 4
TPID_8021Q = 0x8100
VID_MAX = 4095
PCP_MAX = 7

NONE, ADD, DEL = "none", "add", "del"
EMPTY = np.empty(0, np.uint32)


@dataclass(frozen=True)
class VlanOp:
    """What a port does to frames in one direction: nothing, push/rewrite a tag, or strip it."""

    operation: str = NONE
    vid: int = 0
    pcp: int = 0

    def __post_init__(self) -> None:
        if self.operation not in (NONE, ADD, DEL):
            raise ValueError(f"unknown VLAN operation '{self.operation}'")
        if not 0 <= self.vid <= VID_MAX:
            raise ValueError(f"VLAN id {self.vid} out of range 0..{VID_MAX}")
        if not 0 <= self.pcp <= PCP_MAX:
            raise ValueError(f"VLAN priority {self.pcp} out of range 0..{PCP_MAX}")

    @property
    def tci(self) -> int:
        return (self.pcp << 13) | self.vid

    @property
    def active(self) -> bool:
        return self.operation != NONE

    def status(self) -> dict[str, object]:
        """The ``vlan`` object of spp_vf's status (``none`` shows id 0, pcp 0)."""
        if self.operation == ADD:
            return {"operation": ADD, "id": self.vid, "pcp": self.pcp}
        return {"operation": self.operation, "id": 0, "pcp": 0}

    def apply(
        self, data: np.ndarray, lengths: np.ndarray, bufs: np.ndarray, pool: BufferPool | None = None
    ) -> np.ndarray:
        """Edit the frames of ``bufs`` in place; return the buffers that could not be edited."""
        if self.operation == ADD:
            return push_tag(data, lengths, bufs, self.tci, pool)
        if self.operation == DEL:
            strip_tag(data, lengths, bufs, pool)
        return EMPTY


def rows(data: np.ndarray, offset: int, width: int, room: int | None = None) -> np.ndarray:
    """Bytes ``[offset, offset + w)`` of every buffer as *one* numpy element each (a void
    dtype); ``w`` is ``width`` rounded up to a power of two, but at most ``room`` (default: what
    is left of the buffer after ``offset``). Two views for a move between offsets must be made
    with the same ``room``, so that their element sizes agree.

    ``rows(...)[dst] = rows(...)[src]`` moves whole frames with numpy's tight element-copy loop;
    the same move written ``data[dst, a:b] = data[src, a:b]`` goes through the generic
    row-by-row subspace machinery and was ten times slower for a burst of 64-byte frames.
    """
    room = data.shape[1] - offset if room is None else room
    w = min(max(64, 1 << max(width - 1, 0).bit_length()), room)
    if w < width or offset + w > data.shape[1]:
        raise ValueError(f"{width} bytes from offset {offset} do not fit a {data.shape[1]}-byte buffer")
    return np.ndarray((data.shape[0],), f"V{w}", buffer=data, offset=offset, strides=(data.strides[0],))


def _tagged(data: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (data[b, 12] == TPID_8021Q >> 8) & (data[b, 13] == TPID_8021Q & 0xFF)


def _shift_offloads(pool: BufferPool | None, b: np.ndarray, by: int) -> None:
    """Headers grew or shrank by ``by`` bytes in front of L3: move the metadata's offsets."""
    if pool is None or len(b) == 0:
        return
    word = pool.vnet_word[b]
    if not word.any():
        return
    f16 = pool.vnet.view("<u2")  # columns: flags|gso_type, hdr_len, gso_size, csum_start, csum_offset
    some = b[word != 0]
    w = word[word != 0]
    csum = some[(w & 1) != 0]
    gso = some[(w >> 8) != 0]
    f16[csum, 3] = (f16[csum, 3].astype(np.int64) + by).astype(np.uint16)
    f16[gso, 1] = (f16[gso, 1].astype(np.int64) + by).astype(np.uint16)


def _move_large(data: np.ndarray, b: np.ndarray, lens: np.ndarray, src: int, dst: int) -> None:
    """Move bytes ``[src, len)`` of each large-buffer frame to ``dst``, one copy per frame."""
    flat = data.reshape(-1)
    row = data.shape[1]
    for buf, ln in zip(b.tolist(), lens.tolist(), strict=True):
        o = buf * row
        flat[o + dst : o + dst + ln - src] = flat[o + src : o + ln].copy()


def push_tag(
    data: np.ndarray, lengths: np.ndarray, bufs: np.ndarray, tci: int, pool: BufferPool | None = None
) -> np.ndarray:
    """Give every frame of ``bufs`` the outer 802.1Q tag ``tci`` (insert or rewrite).

    Returns the buffers refused because the tag would not fit (not modified).
    """
    if len(bufs) == 0:
        return EMPTY
    b = bufs.astype(np.intp)
    lens = lengths[b]
    b = b[lens >= ETH_HLEN]
    tagged = _tagged(data, b)
    hi, lo = tci >> 8, tci & 0xFF
    if tagged.any():
        t = b[tagged]
        data[t, 14] = hi
        data[t, 15] = lo
        if tagged.all():
            return EMPTY
        b = b[~tagged]
    lens = lengths[b].astype(np.int64)
    buf_size = data.shape[1]
    fits = lens + VLAN_HLEN <= buf_size
    refused = EMPTY
    if not fits.all():
        large = np.zeros(len(b), bool)
        if pool is not None:
            large = ~fits & (b >= pool.large_base) & (lens + VLAN_HLEN <= pool.large_size)
            if large.any():
                lb, ll = b[large], lens[large]
                _move_large(data, lb, ll, 12, 16)
                data[lb, 12:16] = np.array([TPID_8021Q >> 8, TPID_8021Q & 0xFF, hi, lo], np.uint8)
                lengths[lb] = ll + VLAN_HLEN
                _shift_offloads(pool, lb, VLAN_HLEN)
        refused = b[~fits & ~large].astype(np.uint32)
        b, lens = b[fits], lens[fits]
        if len(b) == 0:
            return refused
    width, room = int(lens.max()) - 12, buf_size - 16
    # One gather of everything behind the MAC addresses, one scatter 4 bytes further on (the
    # gather is a copy, so the overlap is harmless).
    rows(data, 16, width, room)[b] = rows(data, 12, width, room)[b]
    data[b, 12:16] = np.array([TPID_8021Q >> 8, TPID_8021Q & 0xFF, hi, lo], np.uint8)
    lengths[b] = lens + VLAN_HLEN
    _shift_offloads(pool, b, VLAN_HLEN)
    return refused


def strip_tag(
    data: np.ndarray, lengths: np.ndarray, bufs: np.ndarray, pool: BufferPool | None = None
) -> None:
    """Remove the outer 802.1Q tag of every tagged frame of ``bufs``; others stay as they are."""
    if len(bufs) == 0:
        return
    b = bufs.astype(np.intp)
    lens = lengths[b]
    b = b[lens >= ETH_HLEN + VLAN_HLEN]
    b = b[_tagged(data, b)]
    if len(b) == 0:
        return
    lens = lengths[b].astype(np.int64)
    _shift_offloads(pool, b, -VLAN_HLEN)
    big = lens > data.shape[1]
    if big.any():
        _move_large(data, b[big], lens[big], 16, 12)
        lengths[b[big]] = lens[big] - VLAN_HLEN
        b, lens = b[~big], lens[~big]
        if len(b) == 0:
            return
    width, room = int(lens.max()) - 16, data.shape[1] - 16
    rows(data, 12, width, room)[b] = rows(data, 16, width, room)[b]
    lengths[b] = lens - VLAN_HLEN
