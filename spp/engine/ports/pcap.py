"""``pcap:N``: replay ``/tmp/spp-rxN.pcap`` on receive, record to ``/tmp/spp-txN.pcap`` on transmit.

As DPDK's pcap PMD in SPP: the rx file is created empty (just the global header) if missing and
read once to its end (no looping); the tx file is overwritten when the port is added. Files are
classic libpcap (microsecond stamps, Ethernet link type) so tcpdump and Wireshark read them.

Receive maps the file and indexes records with a vectorised walk (runs of equal-length records are
found with one numpy comparison); transmit builds the whole burst's records in one numpy array
(:func:`spp.engine.pcapfile.pcap_records`, shared with spp_pcap) and writes it with a single call.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import time
from pathlib import Path

import numpy as np

from spp.engine import offload
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

__all__ = ["GLOBAL_HEADER", "PcapPort", "PcapReader", "PcapWriter", "rx_path", "tx_path"]

INDEX_CHUNK = 8192
ETH_HLEN = 14
_U32 = np.arange(4)


def rx_path(n: int, directory: str = "/tmp") -> Path:
    return Path(directory) / f"spp-rx{n}.pcap"


def tx_path(n: int, directory: str = "/tmp") -> Path:
    return Path(directory) / f"spp-tx{n}.pcap"


class PcapFormatError(PortError):
    pass


class PcapReader:
    """Records of a classic pcap file, handed out in bursts of (offset, length) arrays."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115 - lives as long as the port
        size = os.fstat(self._file.fileno()).st_size
        if size < 24:
            self._file.close()
            raise PcapFormatError(f"{path}: not a pcap file (only {size} bytes)")
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self.buf = np.frombuffer(self._mm, np.uint8)
        magic_le = int.from_bytes(self._mm[0:4], "little")
        magic_be = int.from_bytes(self._mm[0:4], "big")
        if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self.order = "<"
            magic = magic_le
        elif magic_be in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self.order = ">"
            magic = magic_be
        else:
            self.close()
            raise PcapFormatError(f"{path}: not a classic pcap file (magic {magic_le:#010x})")
        self.ns = magic == PCAP_MAGIC_NS
        linktype = int.from_bytes(self._mm[20:24], "little" if self.order == "<" else "big")
        if linktype & 0xFFFF != LINKTYPE_ETHERNET:
            self.close()
            raise PcapFormatError(f"{path}: link type {linktype} is not Ethernet")
        self._u32 = np.dtype(self.order + "u4")
        self.size = size
        self.pos = 24
        self.truncated = False

    def _incl(self, offsets: np.ndarray) -> np.ndarray:
        return self.buf[offsets[:, None] + 8 + _U32].copy().view(self._u32).ravel()

    def next_records(self, max_n: int) -> tuple[np.ndarray, np.ndarray]:
        """Offsets of the data and lengths of up to ``max_n`` whole records after ``pos``."""
        offs: list[np.ndarray] = []
        got = 0
        pos, size = self.pos, self.size
        while got < max_n and pos + RECORD_HEADER <= size:
            (length,) = struct.unpack_from(self.order + "I", self._mm, pos + 8)
            stride = RECORD_HEADER + length
            if pos + stride > size:
                self.truncated = True
                break
            # Guess that the following records have the same length, check them all at once.
            k = min(max_n - got, (size - pos) // stride)
            cand = pos + stride * np.arange(k, dtype=np.int64)
            same = self._incl(cand) == length if k > 1 else np.ones(1, bool)
            run = k if same.all() else int(np.argmin(same))
            offs.append(cand[:run])
            got += run
            pos += stride * run
        self.pos = pos
        if not offs:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        o = np.concatenate(offs)
        return o + RECORD_HEADER, self._incl(o).astype(np.int64)

    def close(self) -> None:
        self.buf = np.empty(0, np.uint8)
        with contextlib.suppress(BufferError, AttributeError):
            self._mm.close()
        self._file.close()


class PcapWriter:
    """Appends bursts to a classic pcap file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - lives as long as the port
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
        directory = ctx.options.get("pcap_dir", "/tmp")
        rxp, txp = rx_path(uid.num, directory), tx_path(uid.num, directory)
        try:
            if not rxp.exists():
                rxp.write_bytes(GLOBAL_HEADER)
            self.reader = PcapReader(rxp)
        except OSError as e:
            raise PortError(f"{uid}: cannot open {rxp}: {e.strerror}") from e
        try:
            self.writer = PcapWriter(txp)
        except OSError as e:
            self.reader.close()
            raise PortError(f"{uid}: cannot create {txp}: {e.strerror}") from e
        self.max_len = ctx.pool.large_size if ctx.seg.spec.nb_large else ctx.pool.buf_size

    def rx_burst(self, max_n: int) -> np.ndarray:
        offs, lens = self.reader.next_records(max_n)
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
            # Reading past a record's end is harmless except past the file's end: clip there.
            src = np.minimum(o[:, None] + cols, self.reader.size - 1)
            pool.data[bufs, :width] = self.reader.buf[src]
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
