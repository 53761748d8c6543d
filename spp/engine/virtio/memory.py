"""A peer's memory table mapped into one flat arena, so address translation is one subtraction.

vhost-user passes guest memory as up to eight regions, each a file descriptor with an offset. We
reserve one contiguous stretch of our address space (``PROT_NONE``, costs nothing) as large as the
guest-physical span of all regions, and map every region into it at its guest-physical offset
with ``MAP_FIXED``. A whole burst of descriptor addresses then translates with one numpy
subtraction, and payloads are copied by fancy indexing of a single array. Holes between regions
stay ``PROT_NONE``: every address is checked against the region table (vectorised) before it is
touched, since touching a hole would be a segmentation fault no ``except`` can catch.

Python's ``mmap`` cannot map at a chosen address, so the arena is made with libc through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
from dataclasses import dataclass

import numpy as np

MAX_SPAN = 1 << 40  # refuse a table whose guest-physical span exceeds 1 TiB

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value
_MAP_FIXED = 0x10
_MAP_NORESERVE = 0x4000
_PROT_NONE = 0


class MemoryError_(ValueError):
    """A memory table we refuse (the message says which region and why)."""


@dataclass(frozen=True)
class Region:
    gpa: int  # guest-physical address (what descriptors carry)
    size: int
    uaddr: int  # the front-end's own virtual address (what ring addresses carry)
    offset: int  # where the region starts in the file


def _mmap(addr: int | None, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
    res = _libc.mmap(addr, length, prot, flags, fd, offset)
    if res is None or res == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


class GuestMemory:
    """The mapped table. ``flat`` is a uint8 array over the arena; index = gpa - ``lo``."""

    def __init__(self, regions: list[Region], fds: list[int]) -> None:
        if not regions:
            raise MemoryError_("empty memory table")
        if len(fds) != len(regions):
            raise MemoryError_(f"{len(regions)} regions but {len(fds)} file descriptors")
        self.regions = sorted(regions, key=lambda r: r.gpa)
        stats = []
        for i, r in enumerate(regions):
            if r.size <= 0 or r.gpa + r.size > 1 << 64 or r.uaddr + r.size > 1 << 64:
                raise MemoryError_(f"region {i}: bad size {r.size:#x} at {r.gpa:#x}")
            st = os.fstat(fds[i])
            if st.st_size < r.offset + r.size:
                raise MemoryError_(
                    f"region {i}: file of {st.st_size:#x} bytes is smaller than offset+size "
                    f"{r.offset + r.size:#x}"
                )
            stats.append(st)
        for a, b in zip(self.regions, self.regions[1:], strict=False):
            if a.gpa + a.size > b.gpa:
                raise MemoryError_(f"regions at {a.gpa:#x} and {b.gpa:#x} overlap")
        page = [max(mmap.PAGESIZE, st.st_blksize) for st in stats]
        align = max(page)
        lo = self.regions[0].gpa // align * align
        hi = max(r.gpa + r.size for r in regions)
        span = -(-(hi - lo) // align) * align
        if span > MAX_SPAN:
            raise MemoryError_(f"guest memory spans {span:#x} bytes, more than {MAX_SPAN:#x}")
        # The extension of each mapping down to its page boundary must only ever cover the same
        # file at the same offsets (QEMU's low regions share one RAM block); anything else would
        # overwrite a neighbour.
        plan = []
        for i, r in enumerate(regions):
            delta = r.offset % page[i]
            start = r.gpa - delta
            if start % page[i]:
                raise MemoryError_(
                    f"region {i}: address {r.gpa:#x} and file offset {r.offset:#x} "
                    f"are not congruent modulo the page size {page[i]:#x}"
                )
            length = -(-(r.size + delta) // page[i]) * page[i]
            for j, other in enumerate(regions):
                if j != i and start < other.gpa + other.size and other.gpa < start + length:
                    same = (stats[i].st_dev, stats[i].st_ino) == (stats[j].st_dev, stats[j].st_ino)
                    if not same or other.offset - other.gpa != r.offset - r.gpa:
                        raise MemoryError_(f"region {i}: page-aligned mapping would cover region {j}")
            plan.append((start, length, r.offset - delta, fds[i]))
        reserve = span + align
        raw = _mmap(None, reserve, _PROT_NONE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0)
        base = -(-raw // align) * align
        self._raw, self._reserve = raw, reserve
        try:
            for start, length, file_off, fd in plan:
                _mmap(
                    base + start - lo,
                    length,
                    mmap.PROT_READ | mmap.PROT_WRITE,
                    mmap.MAP_SHARED | _MAP_FIXED,
                    fd,
                    file_off,
                )
        except OSError as e:
            _libc.munmap(raw, reserve)
            raise MemoryError_(f"cannot map guest memory: {e.strerror}") from None
        self.lo = lo
        self.span = span
        self.base = base
        self.flat: np.ndarray = np.ctypeslib.as_array(
            ctypes.cast(base, ctypes.POINTER(ctypes.c_uint8)), (span,)
        )
        self._starts = np.array([r.gpa - lo for r in self.regions], np.uint64)
        self._ends = np.array([r.gpa + r.size - lo for r in self.regions], np.uint64)
        self._windows: dict[int, np.ndarray] = {}
        self._void_windows: dict[int, np.ndarray] = {}
        #: arena offsets (start, end) when the table is one region, or regions that follow each
        #: other without a hole (our virtio-user driver's rings and packet pool): bounds checks
        #: become two reductions per burst instead of a search, and a copy may run across a
        #: boundary since every byte of the stretch is mapped
        tiled = all(a.gpa + a.size == b.gpa for a, b in zip(self.regions, self.regions[1:], strict=False))
        self.single: tuple[int, int] | None = (int(self._starts[0]), int(self._ends[-1])) if tiled else None
        #: the arena as bytes, and its regions (or tiled stretch) as Python ints: a lone packet's
        #: path (:meth:`offset_one`), where a cold numpy call costs more than the whole copy
        self.mv = memoryview(self.flat)
        bounds = list(zip(self._starts.tolist(), self._ends.tolist(), strict=True))
        self._bounds: list[tuple[int, int]] = [self.single] if self.single else bounds
        self.closed = False

    # -- translation ---------------------------------------------------------------------------

    def offsets(self, gpa: np.ndarray, length: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Arena offsets of ``gpa`` and, per element, whether ``[gpa, gpa+length)`` lies inside one
        region. Offsets of invalid elements are meaningless and must not be used."""
        off = gpa.astype(np.uint64) - np.uint64(self.lo)  # wraps for gpa < lo: caught below
        idx = np.searchsorted(self._starts, off, side="right") - 1
        ok = (idx >= 0) & (gpa >= self.lo)
        idx = np.maximum(idx, 0)
        ends = self._ends[idx]
        ln = np.asarray(length, np.uint64)
        ok &= (ln <= ends) & (off <= ends - np.minimum(ln, ends))
        return off.astype(np.int64), ok

    def region_end(self, off: np.ndarray) -> np.ndarray:
        """The arena offset where the region holding each (valid) offset ends."""
        idx = np.maximum(np.searchsorted(self._starts, off.astype(np.uint64), side="right") - 1, 0)
        return self._ends[idx].astype(np.int64)

    def offset_one(self, gpa: int, length: int) -> int:
        """:meth:`offsets` for one address as Python ints: the arena offset of ``[gpa,
        gpa+length)``, or -1 unless it lies inside one region (or the tiled stretch)."""
        off = gpa - self.lo
        for start, end in self._bounds:
            if start <= off and off + length <= end:
                return off
        return -1

    def offset_of(self, gpa: int, length: int) -> int:
        off, ok = self.offsets(np.array([gpa], np.uint64), length)
        if not ok[0]:
            raise MemoryError_(f"address {gpa:#x}+{length:#x} is outside guest memory")
        return int(off[0])

    def uaddr_to_gpa(self, uaddr: int, length: int) -> int:
        """Ring addresses are the front-end's virtual addresses; descriptors carry guest-physical."""
        for r in self.regions:
            if r.uaddr <= uaddr and uaddr + length <= r.uaddr + r.size:
                return uaddr - r.uaddr + r.gpa
        raise MemoryError_(f"ring address {uaddr:#x}+{length:#x} is in no memory region")

    def view(self, off: int, dtype: np.dtype, count: int) -> np.ndarray:
        nbytes = np.dtype(dtype).itemsize * count
        return self.flat[off : off + nbytes].view(dtype)

    def window(self, width: int) -> np.ndarray:
        """``(span - width + 1, width)`` overlapping rows: row ``o`` is the bytes ``[o, o+width)``,
        so one fancy index gathers (or scatters) a whole burst of payloads."""
        w = self._windows.get(width)
        if w is None:
            w = np.lib.stride_tricks.as_strided(self.flat, (self.span - width + 1, width), (1, 1))
            self._windows[width] = w
        return w

    def word_window(self) -> np.ndarray:
        """The arena as overlapping little-endian uint16s: element ``o`` is bytes ``[o, o+2)``."""
        w = self._word_window
        if w is None:
            w = self._word_window = np.ndarray((self.span - 1,), "<u2", buffer=self.flat, strides=(1,))
        return w

    _word_window: np.ndarray | None = None

    def void_window(self, width: int) -> np.ndarray:
        """Like :meth:`window`, but each row is one ``width``-byte element: a fancy index then
        copies a row with one memcpy instead of an inner loop."""
        w = self._void_windows.get(width)
        if w is None:
            if len(self._void_windows) > 256:
                self._void_windows.clear()
            w = np.ndarray(
                (self.span - width + 1,), np.dtype((np.void, width)), buffer=self.flat, strides=(1,)
            )
            self._void_windows[width] = w
        return w

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._windows.clear()
            self._void_windows.clear()
            self._word_window = None
            self.mv.release()
            _libc.munmap(self._raw, self._reserve)


class RowViews:
    """Rows of a 2-D uint8 array (pool buffers, packet slots) as 1-D arrays of ``width``-byte
    elements starting ``offset`` bytes into each row, cached per (width, offset)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self._views: dict[tuple[int, int], np.ndarray] = {}

    def __call__(self, width: int, offset: int = 0) -> np.ndarray:
        v = self._views.get((width, offset))
        if v is None:
            if len(self._views) > 256:
                self._views.clear()
            rows = self.rows
            v = np.ndarray(
                (rows.shape[0],),
                np.dtype((np.void, width)),
                buffer=rows,
                offset=offset,
                strides=(rows.strides[0],),
            )
            self._views[(width, offset)] = v
        return v


class SharedArea:
    """Memory we own and share with a back-end (the virtio-user driver's side): one memfd."""

    def __init__(self, size: int, name: str = "spp-virtio") -> None:
        self.size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.size)
        self.map = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.flat = np.frombuffer(self.map, np.uint8)
        self.addr = self.flat.ctypes.data  # used as both guest-physical and user address, as DPDK does

    def close(self) -> None:
        self.flat = np.empty(0, np.uint8)
        with contextlib.suppress(BufferError):  # a view still alive: the mapping goes with it
            self.map.close()
        os.close(self.fd)
