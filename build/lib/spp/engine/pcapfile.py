"""Capture file formats, built a whole burst at a time: classic libpcap and pcapng.

Both the ``pcap:N`` port (:mod:`spp.engine.ports.pcap`) and spp_pcap (:mod:`spp.processes.pcap`)
turn a burst of pool buffers into file records here. Every record is "a fixed-size header, the
frame, zero padding, a fixed-size trailer"; :func:`pack_records` lays out a burst of them in one
numpy array with no per-packet Python, and the two formats only differ in the header they build.

* classic pcap: 16-byte record header (seconds, microseconds, captured and original length),
  the global header ``GLOBAL_HEADER`` once per file. Microseconds, because that is what SPP's
  spp_pcap and DPDK's pcap PMD write and what every reader accepts.
* pcapng: a Section Header Block and one Interface Description Block per file (``if_tsresol`` 9,
  so stamps keep their nanoseconds), then one Enhanced Packet Block per frame.
"""

from __future__ import annotations

import struct

import numpy as np

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
SNAPLEN = 65535
GLOBAL_HEADER = struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
RECORD_HEADER = 16

# pcapng (draft-ietf-opsawg-pcapng): block types, the byte-order magic and the options we write.
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_EPB = 0x00000006
PCAPNG_BYTE_ORDER = 0x1A2B3C4D
OPT_ENDOFOPT = 0
OPT_SHB_USERAPPL = 4
OPT_IF_NAME = 2
OPT_IF_TSRESOL = 9
EPB_HEADER = 28  # type, total length, interface id, ts high, ts low, captured, original
EPB_TRAILER = 4  # total length again
CHUNK = 64  # mixed-size bursts copy frames in rows of this many bytes


def pack_records(
    data: np.ndarray,
    bufs: np.ndarray,
    lengths: np.ndarray,
    head: np.ndarray,
    *,
    align: int = 1,
    tail: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lay out ``head[i] + frame i + zero padding to align + tail[i]`` for every buffer.

    ``data`` is the pool's ``(nb_bufs, buf_size)`` byte matrix, ``head`` and ``tail`` are
    ``(n, H)`` and ``(n, T)`` uint8 arrays. Returns the bytes and the size of each record (a
    writer that rotates files cuts the burst on record boundaries with them).

    Two layouts, each a fixed number of numpy calls per burst (never per packet):

    * frames of one size (the common case under load): a plain ``(n, record)`` matrix filled by
      column slices;
    * mixed sizes: each frame's whole 64-byte chunks are copied as rows between two sliding-window
      views (row ``r`` of a window is the 64 bytes at offset ``r``), and the remaining < 64
      bytes of each frame byte by byte, located with ``np.repeat``. The cost follows the bytes
      written, not ``n x`` the largest frame, and most of it is contiguous 64-byte copies.
    """
    n = len(bufs)
    bi = bufs.astype(np.intp)  # intp: numpy converts other index types on every fancy access
    lens = lengths.astype(np.int64)
    h = head.shape[1]
    t = 0 if tail is None else tail.shape[1]
    padded = (lens + (align - 1)) & -align if align > 1 else lens
    sizes = h + padded + t
    if n == 0:
        return np.empty(0, np.uint8), sizes
    first = int(lens[0])
    # (A frame longer than a row lives in a large buffer's consecutive rows: the flat path.)
    if first <= data.shape[1] and bool((lens == first).all()):
        p = int(padded[0])
        rec = np.empty((n, h + p + t), np.uint8)
        rec[:, :h] = head
        rec[:, h : h + first] = data[bi, :first]
        if p > first:
            rec[:, h + first : h + p] = 0
        if tail is not None:
            rec[:, h + p :] = tail
        return rec.reshape(-1), sizes
    starts = _starts(sizes)
    total = int(starts[-1] + sizes[-1])
    out = np.zeros(total, np.uint8) if align > 1 else np.empty(total, np.uint8)
    out[starts[:, None] + np.arange(h)] = head
    if tail is not None:
        out[(starts + h + padded)[:, None] + np.arange(t)] = tail
    flat = data.reshape(-1)
    src0 = bi.astype(np.int64) * data.shape[1]
    dst0 = starts + h
    full = lens // CHUNK
    first_chunk = _starts(full)
    nchunks = int(first_chunk[-1] + full[-1])
    if nchunks:
        at = (np.arange(nchunks, dtype=np.int64) - np.repeat(first_chunk, full)) * CHUNK
        out_rows = np.lib.stride_tricks.as_strided(out, (total - CHUNK + 1, CHUNK), (1, 1))
        data_rows = np.lib.stride_tricks.as_strided(flat, (len(flat) - CHUNK + 1, CHUNK), (1, 1))
        out_rows[np.repeat(dst0, full) + at] = data_rows[np.repeat(src0, full) + at]
    rest = lens - full * CHUNK
    first_byte = _starts(rest)
    nbytes = int(first_byte[-1] + rest[-1])
    if nbytes:
        k = np.arange(nbytes, dtype=np.int64)
        skip = full * CHUNK - first_byte
        out[k + np.repeat(dst0 + skip, rest)] = flat[k + np.repeat(src0 + skip, rest)]
    return out, sizes


def _starts(counts: np.ndarray) -> np.ndarray:
    """Exclusive prefix sum: where each of ``counts`` begins when laid end to end."""
    starts = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


def _u32_bytes(cols: np.ndarray) -> np.ndarray:
    """``(n, k)`` little-endian uint32 columns as ``(n, 4k)`` bytes."""
    return np.ascontiguousarray(cols, "<u4").view(np.uint8).reshape(len(cols), -1)


def pcap_records(
    data: np.ndarray, bufs: np.ndarray, lengths: np.ndarray, stamps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Classic pcap records (µs stamps) for a burst; stamps are ns since the epoch."""
    n = len(bufs)
    hdr = np.empty((n, 4), "<u4")
    hdr[:, 0] = stamps // 1_000_000_000
    hdr[:, 1] = (stamps // 1000) % 1_000_000
    hdr[:, 2] = lengths
    hdr[:, 3] = lengths
    return pack_records(data, bufs, lengths, _u32_bytes(hdr))


def _option(code: int, value: bytes) -> bytes:
    pad = -len(value) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def pcapng_header(if_name: str, application: str = "soft-patch-panel spp_pcap") -> bytes:
    """Section Header Block and the one Interface Description Block (Ethernet, ns stamps)."""
    end = _option(OPT_ENDOFOPT, b"")
    # Section length -1: not given, so a reader never relies on it (we write the file as we go).
    shb_body = struct.pack("<IHHq", PCAPNG_BYTE_ORDER, 1, 0, -1)
    shb = _block(PCAPNG_SHB, shb_body + _option(OPT_SHB_USERAPPL, application.encode()) + end)
    idb = _block(
        PCAPNG_IDB,
        struct.pack("<HHI", LINKTYPE_ETHERNET, 0, SNAPLEN)
        + _option(OPT_IF_NAME, if_name.encode())
        + _option(OPT_IF_TSRESOL, bytes([9]))
        + end,
    )
    return shb + idb


def pcapng_records(
    data: np.ndarray, bufs: np.ndarray, lengths: np.ndarray, stamps: np.ndarray, interface: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Enhanced Packet Blocks for a burst, stamps in ns (the IDB says ``if_tsresol`` 9)."""
    n = len(bufs)
    lens = lengths.astype(np.int64)
    total = EPB_HEADER + ((lens + 3) & -4) + EPB_TRAILER
    st = stamps.astype(np.uint64)
    hdr = np.empty((n, 7), "<u4")
    hdr[:, 0] = PCAPNG_EPB
    hdr[:, 1] = total
    hdr[:, 2] = interface
    hdr[:, 3] = st >> np.uint64(32)
    hdr[:, 4] = st & np.uint64(0xFFFFFFFF)
    hdr[:, 5] = lens
    hdr[:, 6] = lens
    return pack_records(data, bufs, lengths, _u32_bytes(hdr), align=4, tail=_u32_bytes(total.reshape(n, 1)))
