"""Offload metadata per buffer, and finishing in software what a destination cannot do itself.

Every buffer carries a ``struct virtio_net_hdr`` (10 bytes, in the segment beside its length;
see :mod:`spp.engine.shm`), the model DPDK's mbuf offload flags follow too. It says what is left
to do to the frame before it is fit for a wire:

* ``flags & NEEDS_CSUM``: the L4 checksum is partial. The field at ``csum_start + csum_offset``
  holds the pseudo-header sum; the ones' complement sum from ``csum_start`` to the end of the
  frame, inverted, belongs there (Linux's ``CHECKSUM_PARTIAL``).
* ``gso_type`` (``TCPV4``, ``TCPV6``, ``UDP_L4``; ``| ECN``): the frame is an aggregate to be cut
  into segments of ``gso_size`` payload bytes each, every one with its own headers.

The kernel speaks this header on AF_PACKET (``PACKET_VNET_HDR``), TAP (``IFF_VNET_HDR``) and
vhost-user, so an aggregate can go from a namespace to a VM without anyone touching its payload.
A port that cannot hand the metadata on (a pcap file, a socket without the header) calls
:func:`finish` on the burst first: checksums completed and aggregates segmented here, for TCP and
UDP over IPv4 and IPv6, behind up to two VLAN tags, a whole burst at a time (the per-byte work is
numpy gathers and ``reduceat``; the Python work is per burst).

Buffers whose metadata makes no sense (:func:`invalid`) are dropped and counted, never passed on:
the kernel would refuse them, and software segmentation must not trust them.
"""

from __future__ import annotations

import struct

import numpy as np

from spp.engine.pool import BufferPool
from spp.engine.shm import VNET_HDR_LEN

# <linux/virtio_net.h>
NEEDS_CSUM = 1
DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO (IP fragmentation); no kernel makes it any more, and neither do we
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
#: ``struct virtio_net_hdr`` as Python ints: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_FIELDS = struct.Struct("<BBHHHH")

ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8)
IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_FIN, TCP_PSH, TCP_CWR = 0x01, 0x08, 0x80
#: the most header bytes a segment can have: Ethernet, two tags, IPv6 (or IPv4 with options), TCP
#: with options (14 + 8 + 60 + 60)
MAX_HEADERS = 142
CHUNK = 64

_or = np.bitwise_or.reduce


# -- per-port counters of what was done and dropped, by reason (DPDK's xstats) --------------------

XSTATS = (
    "rx_runt",  # shorter than an Ethernet header
    "rx_too_long",  # longer than the largest buffer, or cut short by the kernel
    "rx_bad_vnet",  # offload metadata from the peer that makes no sense
    "tx_refused",  # the kernel refused this one frame (longer than the MTU, a runt...)
    "tx_bad_vnet",  # offload metadata that makes no sense: dropped, not passed on
    "tx_unsegmentable",  # an aggregate whose headers software segmentation cannot handle
    "sw_csum",  # frames whose checksum was completed in software
    "sw_gso",  # aggregates segmented in software
    "sw_segments",  # the segments they became
)
XS = {name: i for i, name in enumerate(XSTATS)}


def new_xstats() -> np.ndarray:
    return np.zeros(len(XSTATS), np.uint64)


def xstats_dict(xs: np.ndarray) -> dict[str, int]:
    """The counters that are not zero, by name (for status replies)."""
    return {name: int(v) for name, v in zip(XSTATS, xs.tolist(), strict=True) if v}


class Vnet:
    """Field views of every buffer's ``struct virtio_net_hdr`` (strided numpy arrays)."""

    def __init__(self, pool: BufferPool) -> None:
        raw = pool.vnet

        def field(off: int, dt: str) -> np.ndarray:
            return np.ndarray((len(raw),), dt, buffer=raw.data, offset=off, strides=(VNET_HDR_LEN,))

        self.raw = raw
        self.flags = field(0, "u1")
        self.gso_type = field(1, "u1")
        self.hdr_len = field(2, "<u2")
        self.gso_size = field(4, "<u2")
        self.csum_start = field(6, "<u2")
        self.csum_offset = field(8, "<u2")


def vnet_of(pool: BufferPool) -> Vnet:
    """The field views of ``pool``'s metadata (made once per pool handle)."""
    v: Vnet | None = getattr(pool, "_vnet_fields", None)
    if v is None:
        v = Vnet(pool)
        pool._vnet_fields = v  # type: ignore[attr-defined]
    return v


# -- validation ------------------------------------------------------------------------------------


#: per gso_type (ECN bit cleared): one we cannot honour. A table lookup, where ``np.isin`` cost
#: ~38 µs a burst (it sorts), a tenth of a TCP flow's forwarding time through a TAP.
_GSO_UNKNOWN = np.ones(256, bool)
_GSO_UNKNOWN[[GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4]] = False


def invalid(pool: BufferPool, bufs: np.ndarray) -> np.ndarray:
    """Mask of ``bufs`` (all with non-zero metadata) whose offload metadata cannot be honoured."""
    v = vnet_of(pool)
    bi = bufs.astype(np.intp)
    flags = v.flags[bi]
    gso = v.gso_type[bi] & ~np.uint8(GSO_ECN)
    lens = pool.lengths[bi].astype(np.int64)
    cs = v.csum_start[bi].astype(np.int64)
    co = v.csum_offset[bi].astype(np.int64)
    bad = (flags & ~np.uint8(NEEDS_CSUM | DATA_VALID)) != 0
    bad |= _GSO_UNKNOWN.take(gso)
    bad |= ((flags & NEEDS_CSUM) != 0) & ((cs < ETH_HLEN) | (cs + co + 2 > lens))
    is_gso = gso != GSO_NONE
    bad |= is_gso & ((v.gso_size[bi] == 0) | (v.hdr_len[bi].astype(np.int64) > lens))
    bad |= lens < ETH_HLEN
    return bad


def invalid_one(
    flags: int, gso_type: int, hdr_len: int, gso_size: int, csum_start: int, csum_offset: int, length: int
) -> bool:
    """:func:`invalid` for one frame's fields as Python ints (drivers' few-frame paths)."""
    gso = gso_type & ~GSO_ECN
    return bool(
        flags & ~(NEEDS_CSUM | DATA_VALID)
        or gso not in (GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4)
        or (flags & NEEDS_CSUM and (csum_start < ETH_HLEN or csum_start + csum_offset + 2 > length))
        or (gso != GSO_NONE and (gso_size == 0 or hdr_len > length))
        or length < ETH_HLEN
    )


def invalid_buf(pool: BufferPool, buf: int, length: int) -> bool:
    """:func:`invalid_one` for buffer ``buf`` of ``length`` bytes, read through the pool's
    memoryviews (a lone frame's path: no numpy). A buffer with nothing left to do is valid."""
    vnet, v = pool.vnet_mv, buf * VNET_HDR_LEN
    return bool((vnet[v] or vnet[v + 1]) and invalid_one(*VNET_FIELDS.unpack_from(vnet, v), length))


def check_burst(pool: BufferPool, bufs: np.ndarray, xstats: np.ndarray, reason: str) -> np.ndarray:
    """``bufs`` less those whose metadata is invalid (freed and counted under ``reason``)."""
    if len(bufs) == 0:
        return bufs
    word = pool.vnet_word[bufs]
    if not _or(word):
        return bufs
    some = np.flatnonzero(word)
    bad = invalid(pool, bufs[some])
    if not bad.any():
        return bufs
    drop = some[bad]
    pool.free(bufs[drop])
    xstats[XS[reason]] += len(drop)
    keep = np.ones(len(bufs), bool)
    keep[drop] = False
    return bufs[keep]


# -- the ones' complement sum over many byte ranges at once ---------------------------------------


def _starts(counts: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(counts), np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=starts[1:])
    return starts


WORDS = 32  # 16-bit words summed per gathered row


def _segment_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of consecutive runs of ``values`` of the given lengths (zero-length runs give 0)."""
    out = np.zeros(len(counts), np.int64)
    nz = counts > 0
    if nz.any():
        out[nz] = np.add.reduceat(values, _starts(counts[nz]))
    return out


def range_sums(flat: np.ndarray, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The 16-bit ones' complement sum (folded, not inverted) of each byte range of ``flat``.

    Bytes pair up from each range's own start (RFC 1071), an odd last byte padded with zero.
    Ranges that start on an even address are summed as big-endian words: whole rows of
    ``WORDS`` words are gathered from a sliding-window view and summed along the row, the rest
    word by word, and one ``reduceat`` per kind gives each range its total. Odd starts (never
    seen from the kernel: L3 and L4 headers sit at even offsets) take a byte-wise path.
    """
    n = len(begin)
    if n == 0:
        return np.zeros(0, np.int64)
    begin = np.asarray(begin, np.int64)
    end = np.asarray(end, np.int64)
    length = np.maximum(end - begin, 0)
    odd_start = (begin & 1) != 0
    if odd_start.any():
        out = np.zeros(n, np.int64)
        out[odd_start] = _byte_sums(flat, begin[odd_start], end[odd_start])
        even = ~odd_start
        if even.any():
            out[even] = range_sums(flat, begin[even], end[even])
        return out
    w16 = flat[: len(flat) & ~1].view(">u2")
    wb = begin >> 1
    nwords = length >> 1
    rows = nwords // WORDS
    total = np.zeros(n, np.int64)
    nrows = int(rows.sum())
    if nrows:
        win = np.lib.stride_tricks.as_strided(w16, (len(w16) - WORDS + 1, WORDS), (2, 2), writeable=False)
        at = np.arange(nrows, dtype=np.int64) - np.repeat(_starts(rows), rows)
        at *= WORDS
        at += np.repeat(wb, rows)
        total += _segment_sums(win[at].sum(axis=1, dtype=np.int64), rows)
    rest = nwords - rows * WORDS
    nrest = int(rest.sum())
    if nrest:
        at = np.arange(nrest, dtype=np.int64) - np.repeat(_starts(rest), rest)
        at += np.repeat(wb + rows * WORDS, rest)
        total += _segment_sums(w16[at].astype(np.int64), rest)
    odd_len = (length & 1) != 0
    if odd_len.any():
        total[odd_len] += flat[end[odd_len] - 1].astype(np.int64) << 8
    return fold(total)


def _byte_sums(flat: np.ndarray, begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    n = len(begin)
    out = np.zeros(n, np.int64)
    length = np.maximum(end - begin, 0)
    words = (length + 1) >> 1
    nz = words > 0
    if not nz.any():
        return out
    b, e, w = begin[nz], end[nz], words[nz]
    first = _starts(w)
    total = int(first[-1] + w[-1])
    pos = np.arange(total, dtype=np.int64)
    pos -= np.repeat(first, w)
    pos *= 2
    pos += np.repeat(b, w)
    hi = flat[pos].astype(np.int64)
    lo_pos = pos + 1
    inside = lo_pos < np.repeat(e, w)
    lo = np.where(inside, flat[np.minimum(lo_pos, len(flat) - 1)], 0).astype(np.int64)
    out[nz] = np.add.reduceat((hi << 8) | lo, first)
    return fold(out)


def fold(s: np.ndarray) -> np.ndarray:
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return (s & 0xFFFF) + (s >> 16)


def _put16(flat: np.ndarray, pos: np.ndarray, val: np.ndarray) -> None:
    flat[pos] = (val >> 8) & 0xFF
    flat[pos + 1] = val & 0xFF


def _get16(flat: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (flat[pos].astype(np.int64) << 8) | flat[pos + 1]


def _get32(flat: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return (_get16(flat, pos) << 16) | _get16(flat, pos + 2)


# -- completing partial checksums -----------------------------------------------------------------


def complete_checksums(pool: BufferPool, bufs: np.ndarray) -> None:
    """Finish the partial checksum of every frame of ``bufs`` (all flagged NEEDS_CSUM, valid)."""
    if len(bufs) == 0:
        return
    v = vnet_of(pool)
    bi = bufs.astype(np.intp)
    flat = pool.data.reshape(-1)
    base = bi.astype(np.int64) * pool.buf_size
    start = base + v.csum_start[bi]
    field = start + v.csum_offset[bi]
    s = range_sums(flat, start, base + pool.lengths[bi])
    csum = ~s & 0xFFFF
    # A UDP checksum of zero means "none", so UDP sends 0xffff instead (RFC 768); TCP keeps 0
    # (readers such as Wireshark flag 0xffff there). UDP is the one whose field is at offset 6.
    udp = v.csum_offset[bi] == 6
    csum[udp & (csum == 0)] = 0xFFFF
    _put16(flat, field, csum)
    v.flags[bi] &= ~np.uint8(NEEDS_CSUM)


# -- parsing the headers of aggregates --------------------------------------------------------------


def _headers(pool: BufferPool, bufs: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """``(l3 offset, is_ipv6, l4 offset, l4 header length, l4 protocol, ok)`` per frame."""
    flat = pool.data.reshape(-1)
    base = bufs.astype(np.int64) * pool.buf_size
    lens = pool.lengths[bufs.astype(np.intp)].astype(np.int64)
    l3 = np.full(len(bufs), ETH_HLEN, np.int64)
    etype = _get16(flat, base + 12)
    for _ in range(2):
        tagged = (etype == VLAN_TPIDS[0]) | (etype == VLAN_TPIDS[1])  # (np.isin sorts: ~40 µs)
        if not tagged.any():
            break
        l3 += 4 * tagged
        etype = np.where(tagged, _get16(flat, base + l3 - 2), etype)
    v4 = etype == ETH_P_IP
    v6 = etype == ETH_P_IPV6
    first = flat[base + l3].astype(np.int64)
    ihl = np.where(v4, (first & 0x0F) * 4, 40)
    proto = np.where(v4, flat[base + l3 + 9], flat[base + l3 + 6]).astype(np.int64)
    l4 = l3 + ihl
    tcp = proto == IPPROTO_TCP
    doff = (flat[np.minimum(base + l4 + 12, len(flat) - 1)].astype(np.int64) >> 4) * 4
    l4len = np.where(tcp, doff, 8)
    ok = (v4 | v6) & (ihl >= 20) & ((first >> 4) == np.where(v4, 4, 6))
    ok &= (tcp & (l4len >= 20)) | (proto == IPPROTO_UDP)
    ok &= l4 + l4len <= lens
    return l3, v6, l4, l4len, proto, ok


def _l4_checksums(
    flat: np.ndarray,
    base: np.ndarray,
    l3: np.ndarray,
    v6: np.ndarray,
    l4: np.ndarray,
    end: np.ndarray,
    proto: np.ndarray,
) -> None:
    """Write full TCP/UDP checksums (pseudo-header included) of frames at ``base``."""
    tcp = proto == IPPROTO_TCP
    field = base + l4 + np.where(tcp, 16, 6)
    flat[field] = 0
    flat[field + 1] = 0
    addr_b = base + l3 + np.where(v6, 8, 12)
    addr_e = addr_b + np.where(v6, 32, 8)
    l4len = end - (base + l4)
    s = range_sums(flat, addr_b, addr_e) + proto + l4len + range_sums(flat, base + l4, end)
    csum = ~fold(s) & 0xFFFF
    csum[~tcp & (csum == 0)] = 0xFFFF  # UDP only: zero there means "no checksum"
    _put16(flat, field, csum)


def copy_ranges(flat: np.ndarray, src: np.ndarray, dst: np.ndarray, lens: np.ndarray) -> None:
    """``flat[dst[i]:dst[i]+lens[i]] = flat[src[i]:...]`` for every i, in a few numpy calls: whole
    64-byte chunks as rows of two sliding-window views, the remainder byte by byte."""
    if len(src) == 0:
        return
    full = lens // CHUNK
    nchunks = int(full.sum())
    if nchunks:
        first = _starts(full)
        at = (np.arange(nchunks, dtype=np.int64) - np.repeat(first, full)) * CHUNK
        win = np.lib.stride_tricks.as_strided(flat, (len(flat) - CHUNK + 1, CHUNK), (1, 1))
        win[np.repeat(dst, full) + at] = win[np.repeat(src, full) + at]
    rest = lens - full * CHUNK
    nbytes = int(rest.sum())
    if nbytes:
        k = np.arange(nbytes, dtype=np.int64) - np.repeat(_starts(rest), rest)
        skip = full * CHUNK
        flat[np.repeat(dst + skip, rest) + k] = flat[np.repeat(src + skip, rest) + k]


# -- segmentation ----------------------------------------------------------------------------------


def segment(pool: BufferPool, bufs: np.ndarray, xstats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut the aggregates ``bufs`` into wire-sized segments with complete checksums.

    Returns ``(segments, owner)``: the new buffers in order and, for each, the position in
    ``bufs`` of the aggregate it came from. Aggregates whose headers cannot be segmented (not
    TCP/UDP over IPv4/IPv6, or inconsistent with their gso type) have no segments and are counted;
    when the pool runs dry the segments missing are those of the last aggregates. The caller
    frees ``bufs``.
    """
    v = vnet_of(pool)
    bi = bufs.astype(np.intp)
    flat = pool.data.reshape(-1)
    l3, v6, l4, l4len, proto, ok = _headers(pool, bufs)  # type: ignore[misc]
    gso = (v.gso_type[bi] & ~np.uint8(GSO_ECN)).astype(np.int64)
    ok &= np.where(gso == GSO_UDP_L4, proto == IPPROTO_UDP, proto == IPPROTO_TCP)
    ok &= np.where(gso == GSO_TCPV6, v6, True) & np.where(gso == GSO_TCPV4, ~v6, True)
    lens = pool.lengths[bi].astype(np.int64)
    hdr = l4 + l4len
    ok &= hdr <= MAX_HEADERS
    if not ok.all():
        xstats[XS["tx_unsegmentable"]] += int(np.count_nonzero(~ok))
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return np.empty(0, np.uint32), np.empty(0, np.int64)
    size = v.gso_size[bi[idx]].astype(np.int64)
    hdr, payload = hdr[idx], lens[idx] - hdr[idx]
    nseg = np.maximum(-(-payload // size), 1)
    owner_local = np.repeat(np.arange(len(idx)), nseg)
    k = np.arange(len(owner_local), dtype=np.int64) - np.repeat(_starts(nseg), nseg)
    s_hdr = hdr[owner_local]
    off = k * size[owner_local]
    plen = np.minimum(size[owner_local], payload[owner_local] - off)
    slen = s_hdr + plen
    # Buffers: ordinary ones where a segment fits, large ones otherwise (jumbo gso sizes).
    big = slen > pool.buf_size
    segs = np.empty(len(slen), np.uint32)
    small = pool.alloc(int(np.count_nonzero(~big)))
    large = pool.alloc_large(int(np.count_nonzero(big))) if big.any() else np.empty(0, np.uint32)
    have = np.ones(len(slen), bool)
    pos_small, pos_big = np.flatnonzero(~big), np.flatnonzero(big)
    have[pos_small[len(small) :]] = False
    have[pos_big[len(large) :]] = False
    segs[pos_small[: len(small)]] = small
    segs[pos_big[: len(large)]] = large
    if not have.all():
        # Keep whole aggregates only: drop every segment of one that lost any.
        lost = np.unique(owner_local[~have])
        keep_seg = ~np.isin(owner_local, lost)
        pool.free(segs[have & ~keep_seg])
        have &= keep_seg
        segs, owner_local, k, s_hdr, off, plen, slen = (
            a[have] for a in (segs, owner_local, k, s_hdr, off, plen, slen)
        )
    n = len(segs)
    if n == 0:
        return segs, np.empty(0, np.int64)
    src_buf = bi[idx][owner_local]
    src_base = src_buf.astype(np.int64) * pool.buf_size
    dst_base = segs.astype(np.int64) * pool.buf_size
    width = int(s_hdr.max())
    pool.data[segs.astype(np.intp), :width] = pool.data[src_buf, :width]
    copy_ranges(flat, src_base + s_hdr + off, dst_base + s_hdr, plen)
    pool.lengths[segs] = slen
    pool.stamps[segs] = pool.stamps[src_buf]
    pool.vnet_word[segs] = 0
    # Per segment header fields.
    sl3, sv6, sl4 = l3[idx][owner_local], v6[idx][owner_local], l4[idx][owner_local]
    sproto = proto[idx][owner_local]
    v4 = ~sv6
    if v4.any():
        b = dst_base[v4] + sl3[v4]
        _put16(flat, b + 2, slen[v4] - sl3[v4])
        _put16(flat, b + 4, (_get16(flat, b + 4) + k[v4]) & 0xFFFF)
        flat[b + 10] = 0
        flat[b + 11] = 0
        ihl = (flat[b].astype(np.int64) & 0x0F) * 4
        _put16(flat, b + 10, ~range_sums(flat, b, b + ihl) & 0xFFFF)
    if sv6.any():
        b = dst_base[sv6] + sl3[sv6]
        _put16(flat, b + 4, slen[sv6] - sl3[sv6] - 40)
    tcp = sproto == IPPROTO_TCP
    if tcp.any():
        t = dst_base[tcp] + sl4[tcp]
        seq = (_get32(flat, t + 4) + off[tcp]) & 0xFFFFFFFF
        _put16(flat, t + 4, seq >> 16)
        _put16(flat, t + 6, seq & 0xFFFF)
        last = np.ones(n, bool)
        last[:-1] = owner_local[1:] != owner_local[:-1]
        fl = flat[t + 13]
        fl = np.where(last[tcp], fl, fl & ~np.uint8(TCP_FIN | TCP_PSH))
        fl = np.where(k[tcp] == 0, fl, fl & ~np.uint8(TCP_CWR))
        flat[t + 13] = fl
    udp = ~tcp
    if udp.any():
        u = dst_base[udp] + sl4[udp]
        _put16(flat, u + 4, slen[udp] - sl4[udp])
    _l4_checksums(flat, dst_base, sl3, sv6, sl4, dst_base + slen, sproto)
    made = np.unique(owner_local)
    xstats[XS["sw_gso"]] += len(made)
    xstats[XS["sw_segments"]] += n
    return segs, idx[owner_local]


# -- the whole job for a destination, by what it can take ----------------------------------------

#: What a destination can take (``caps`` of :func:`prepare`), as negotiated with a virtio peer:
CAN_CSUM = 1  # partial checksums (and DATA_VALID): VIRTIO_NET_F_GUEST_CSUM / F_CSUM
CAN_TSO4 = 2  # TCP/IPv4 aggregates: GUEST_TSO4 / HOST_TSO4
CAN_TSO6 = 4  # TCP/IPv6 aggregates: GUEST_TSO6 / HOST_TSO6
CAN_ECN = 8  # aggregates marked ECN: GUEST_ECN / HOST_ECN
CAN_USO = 16  # UDP aggregates (GSO_UDP_L4): GUEST_USO4+6 / HOST_USO
CAN_ALL = CAN_CSUM | CAN_TSO4 | CAN_TSO6 | CAN_ECN | CAN_USO


def _taken(gso_raw: np.ndarray, caps: int) -> np.ndarray:
    """Mask of aggregates (by raw gso_type) the destination takes as they are."""
    gso = gso_raw & ~np.uint8(GSO_ECN)
    ok = np.zeros(len(gso), bool)
    if not caps & CAN_CSUM:  # every offload needs checksum offload underneath
        return ok
    for bit, kind in ((CAN_TSO4, GSO_TCPV4), (CAN_TSO6, GSO_TCPV6), (CAN_USO, GSO_UDP_L4)):
        if caps & bit:
            ok |= gso == kind
    if not caps & CAN_ECN:
        ok &= (gso_raw & GSO_ECN) == 0
    return ok


def prepare(pool: BufferPool, bufs: np.ndarray, xstats: np.ndarray, caps: int) -> np.ndarray:
    """Make ``bufs`` fit for a destination that takes the offloads ``caps`` (``CAN_*``): drop
    what is invalid, complete the partial checksums it cannot, segment the aggregates it cannot
    take; what it can take keeps its metadata. Returns the burst to send, in order (it may be
    longer than ``bufs``); every buffer not in it has been freed and counted.

    One gather and one test when nothing is to be done, so a port may call it on every burst.
    """
    if len(bufs) == 0:
        return bufs
    word = pool.vnet_word[bufs]
    if not _or(word):
        return bufs
    some = np.flatnonzero(word)
    sub = bufs[some]
    si = sub.astype(np.intp)
    bad = invalid(pool, sub)
    v = vnet_of(pool)
    gso_raw = v.gso_type[si]
    gso = (gso_raw & ~np.uint8(GSO_ECN)) != 0
    gso &= ~_taken(gso_raw, caps)  # aggregates to cut here
    if not caps & CAN_CSUM:
        csum = ~bad & ~gso & ((v.flags[si] & NEEDS_CSUM) != 0)
        if csum.any():
            complete_checksums(pool, sub[csum])
            xstats[XS["sw_csum"]] += int(np.count_nonzero(csum))
        pool.vnet_word[sub[~bad & ~gso]] = 0
    agg = ~bad & gso
    if not bad.any() and not agg.any():
        return bufs
    if bad.any():
        xstats[XS["tx_bad_vnet"]] += int(np.count_nonzero(bad))
    drop_pos = some[bad | agg]
    keep = np.ones(len(bufs), bool)
    keep[drop_pos] = False
    if not agg.any():
        pool.free(bufs[drop_pos])
        return bufs[keep]
    agg_pos = some[agg]
    segs, owner = segment(pool, bufs[agg_pos], xstats)
    pool.free(bufs[drop_pos])
    # Splice: every frame keeps its place, an aggregate's place goes to its segments.
    order_key = np.concatenate([np.flatnonzero(keep).astype(np.float64), agg_pos[owner] + 0.5])
    out = np.concatenate([bufs[keep], segs])
    return out[np.argsort(order_key, kind="stable")]


def finish(pool: BufferPool, bufs: np.ndarray, xstats: np.ndarray) -> np.ndarray:
    """:func:`prepare` for a destination that takes no offload metadata at all (a wire, a file):
    every checksum complete, every aggregate segmented, every buffer's metadata cleared."""
    return prepare(pool, bufs, xstats, 0)
