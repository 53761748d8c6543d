"""``pcap:N``: replay ``/tmp/spp-rxN.pcap`` on receive, record to ``/tmp/spp-txN.pcap`` on transmit.

As DPDK's pcap PMD in SPP: the rx file is created empty (just the global header) if missing and
read once to its end (no looping); the tx file is replaced when the port is added. Files are
classic libpcap (microsecond stamps, Ethernet link type) so tcpdump and Wireshark read them. The
primary's ``--vdev net_pcapN,rx_pcap=PATH,tx_pcap=PATH`` names other files for ``pcap:N``.

Both files are handled with :mod:`spp.engine.safefile`: the tx file is created exclusively
(mode 0600), replacing only a regular file of our own user, never writing through a link someone
planted; the rx file must be a regular file and is read, not mapped, so a file truncated under
the reader ends the replay with an error instead of a SIGBUS.

Receive reads the file in windows and indexes records with a vectorised walk (runs of equal-length
records are found with one numpy comparison); transmit builds the whole burst's records in one numpy array
(:func:`spp.engine.pcapfile.pcap_records`, shared with spp_pcap) and writes it with a single call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from pathlib import Path

import numpy as np

from spp.engine import offload, safefile
from spp.engine.offload import XS
from spp.engine.pcapfile import (
    GLOBAL_HEADER,
    LINKTYPE_ETHERNET,
    PCAP_MAGIC_NS,
    PCAP_MAGIC_US,
    RECORD_HEADER,
    pcap_records,
)
from spp.engine.portid import PortId
from spp.engine.ports.base import RX_DROP, TX_DROP, Port, PortContext, PortError

__all__ = ["GLOBAL_HEADER", "PcapPort", "PcapReader", "PcapWriter", "pcap_paths", "rx_path", "tx_path"]

log = logging.getLogger(__name__)

WINDOW = 4 << 20
"""Bytes of the rx file read at a time."""

MAX_RECORD = 256 * 1024
"""Longest record accepted (DPDK's pcap snap length is 64 KiB; anything far beyond is corruption)."""

ETH_HLEN = 14
_U32 = np.arange(4)


def rx_path(n: int, directory: str = "/tmp") -> Path:
    return Path(directory) / f"spp-rx{n}.pcap"


def tx_path(n: int, directory: str = "/tmp") -> Path:
    return Path(directory) / f"spp-tx{n}.pcap"


def pcap_paths(n: int, ctx: PortContext) -> tuple[Path, Path]:
    """The rx and tx files of ``pcap:n``: the primary's ``--vdev net_pcapN,rx_pcap=,tx_pcap=``
    (kept in the segment) if it named them, else SPP's ``/tmp/spp-rxN.pcap``/``spp-txN.pcap``
    (in ``options["pcap_dir"]`` instead of /tmp if given)."""
    directory = ctx.options.get("pcap_dir", "/tmp")
    rxp, txp = rx_path(n, directory), tx_path(n, directory)
    named = getattr(ctx.seg.spec, "pcaps", {}).get(str(n), {})
    return Path(named.get("rx", rxp)), Path(named.get("tx", txp))


class PcapFormatError(PortError):
    pass


class PcapReader:
    """Records of a classic pcap file, handed out in bursts of (offset, length) arrays.

    The file is read with ``pread`` into a window of :data:`WINDOW` bytes (or one record, if
    bigger), never mapped: a mapped file that someone truncates kills the reader with SIGBUS.
    Offsets are into :attr:`buf`, the current window; a burst never spans two windows. The file
    is read up to its size at open; if it then shrinks, :meth:`next_records` raises
    :class:`PcapFormatError` instead of handing out garbage.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        size = os.fstat(fd).st_size
        if size < 24:
            os.close(fd)
            raise PcapFormatError(f"{path}: not a pcap file (only {size} bytes)")
        header = os.pread(fd, 24, 0)
        magic_le = int.from_bytes(header[0:4], "little")
        magic_be = int.from_bytes(header[0:4], "big")
        if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self.order = "<"
            magic = magic_le
        elif magic_be in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self.order = ">"
            magic = magic_be
        else:
            os.close(fd)
            raise PcapFormatError(f"{path}: not a classic pcap file (magic {magic_le:#010x})")
        self.ns = magic == PCAP_MAGIC_NS
        linktype = int.from_bytes(header[20:24], "little" if self.order == "<" else "big")
        if linktype & 0xFFFF != LINKTYPE_ETHERNET:
            os.close(fd)
            raise PcapFormatError(f"{path}: link type {linktype} is not Ethernet")
        self._u32 = np.dtype(self.order + "u4")
        self.size = size
        self.pos = 24
        self.truncated = False
        self.buf = np.empty(0, np.uint8)
        self._base = 24  # file offset of buf[0]

    @classmethod
    def open(cls, path: Path) -> PcapReader:
        return cls(path, safefile.open_for_reading(path))

    def _incl(self, offsets: np.ndarray) -> np.ndarray:
        return self.buf[offsets[:, None] + 8 + _U32].copy().view(self._u32).ravel()

    def _cover(self, pos: int, need: int) -> int:
        """Make the window hold file bytes ``[pos, pos + need)``; returns ``pos`` in window terms."""
        end = self._base + len(self.buf)
        if pos < self._base or pos + need > end:
            length = min(max(WINDOW, need), self.size - pos)
            data = os.pread(self._fd, length, pos)
            if len(data) < length:
                raise PcapFormatError(
                    f"{self.path}: the file shrank while being read (expected {self.size} bytes, "
                    f"ends at {pos + len(data)})"
                )
            self.buf = np.frombuffer(data, np.uint8)
            self._base = pos
        return pos - self._base

    def next_records(self, max_n: int) -> tuple[np.ndarray, np.ndarray]:
        """Offsets into :attr:`buf` of the data and lengths of up to ``max_n`` whole records."""
        if self.pos + RECORD_HEADER > self.size:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        at = self._cover(self.pos, RECORD_HEADER)
        (length,) = struct.unpack_from(self.order + "I", self.buf, at + 8)
        stride = RECORD_HEADER + length
        if length > MAX_RECORD or self.pos + stride > self.size:
            self.truncated = True  # a cut-off last record, or a length no frame has: stop here
            self.pos = self.size
            return np.empty(0, np.int64), np.empty(0, np.int64)
        at = self._cover(self.pos, stride)
        offs: list[np.ndarray] = []
        got = 0
        pos, size = at, len(self.buf)
        while got < max_n and pos + RECORD_HEADER <= size:
            (length,) = struct.unpack_from(self.order + "I", self.buf, pos + 8)
            stride = RECORD_HEADER + length
            if pos + stride > size:
                break  # continues in the next window (or is cut off: checked when we get there)
            # Guess that the following records have the same length, check them all at once.
            k = min(max_n - got, (size - pos) // stride)
            cand = pos + stride * np.arange(k, dtype=np.int64)
            same = self._incl(cand) == length if k > 1 else np.ones(1, bool)
            run = k if same.all() else int(np.argmin(same))
            offs.append(cand[:run])
            got += run
            pos += stride * run
        self.pos = self._base + pos
        o = np.concatenate(offs)
        return o + RECORD_HEADER, self._incl(o).astype(np.int64)

    def close(self) -> None:
        self.buf = np.empty(0, np.uint8)
        with contextlib.suppress(OSError):
            os.close(self._fd)


class PcapWriter:
    """Appends bursts to a classic pcap file, created afresh (see :func:`safefile.create_exclusive`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = os.fdopen(safefile.create_exclusive(path), "wb")
        self._file.write(GLOBAL_HEADER)
        self._file.flush()

    def write_burst(
        self, data: np.ndarray, bufs: np.ndarray, lengths: np.ndarray, stamps: np.ndarray
    ) -> None:
        out, _sizes = pcap_records(data, bufs, lengths, stamps)
        self._file.write(out.data)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class PcapPort(Port):
    def __init__(self, uid: PortId, ctx: PortContext) -> None:
        super().__init__(uid, ctx)
        rxp, txp = pcap_paths(uid.num, ctx)
        try:
            with contextlib.suppress(FileExistsError):
                # Missing: an empty capture (DPDK's pcap PMD wants the file to exist).
                fd = os.open(rxp, safefile.WRITE_FLAGS, safefile.PRIVATE)
                with os.fdopen(fd, "wb") as f:
                    f.write(GLOBAL_HEADER)
            self.reader = PcapReader.open(rxp)
        except OSError as e:
            raise PortError(f"{uid}: cannot open {rxp}: {e.strerror or e}") from e
        try:
            self.writer = PcapWriter(txp)
        except OSError as e:
            self.reader.close()
            raise PortError(f"{uid}: cannot create {txp}: {e.strerror or e}") from e
        self.max_len = ctx.pool.large_size if ctx.seg.spec.nb_large else ctx.pool.buf_size
        self.error = ""

    def rx_burst(self, max_n: int) -> np.ndarray:
        if self.error:
            return np.empty(0, np.uint32)
        try:
            offs, lens = self.reader.next_records(max_n)
        except (PcapFormatError, OSError) as e:
            self.error = str(e)
            log.error("%s: stops replaying: %s", self.uid, self.error)
            return np.empty(0, np.uint32)
        if len(offs) == 0:
            return np.empty(0, np.uint32)
        runt = lens < ETH_HLEN
        too_long = lens > self.max_len
        if runt.any() or too_long.any():
            # A frame bigger than any buffer cannot be carried, a runt is no frame: count, skip.
            self.counters[RX_DROP] += int(np.count_nonzero(runt | too_long))
            self.xstats[XS["rx_runt"]] += int(np.count_nonzero(runt))
            self.xstats[XS["rx_too_long"]] += int(np.count_nonzero(too_long))
            ok = ~(runt | too_long)
            offs, lens = offs[ok], lens[ok]
        pool = self.pool
        big = lens > pool.buf_size
        bufs = pool.alloc(int(np.count_nonzero(~big)))
        large = pool.alloc_large(int(np.count_nonzero(big))) if big.any() else bufs[:0]
        if len(bufs) + len(large) < len(offs):
            self.counters[RX_DROP] += len(offs) - len(bufs) - len(large)
            pool.free(bufs)
            pool.free(large)
            return np.empty(0, np.uint32)
        out = np.empty(len(offs), np.uint32)
        out[~big] = bufs
        out[big] = large
        if len(bufs):
            o, ln = offs[~big], lens[~big]
            width = int(ln.max())
            cols = np.arange(width)
            # Reading past a record's end is harmless except past the window's end: clip there.
            window = self.reader.buf
            src = np.minimum(o[:, None] + cols, len(window) - 1)
            pool.data[bufs, :width] = window[src]
        for b, o, ln in zip(large.tolist(), offs[big].tolist(), lens[big].tolist(), strict=True):
            pool.frame(b, ln)[:] = self.reader.buf[o : o + ln]
        pool.lengths[out] = lens
        pool.stamps[out] = time.time_ns()
        return out

    def tx_burst(self, bufs: np.ndarray) -> int:
        # A file takes no offload metadata: checksums completed and aggregates segmented first,
        # so the file shows what a wire would have carried.
        pool = self.pool
        out = offload.finish(pool, bufs, self.xstats)
        try:
            self.writer.write_burst(pool.data, out, pool.lengths[out], pool.stamps[out])
        except OSError:
            if out is bufs:
                return 0  # disk full or gone: the caller frees the burst and counts it as tx_drop
            pool.free(out)
            self.counters[TX_DROP] += len(out)
            return len(bufs)
        pool.free(out)
        return len(bufs)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()
