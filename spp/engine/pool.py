"""The packet buffer pool (the role of DPDK's mempool ``MProc_pktmbuf_pool``).

Buffers are fixed-size slots in the shared segment, named by their index. A burst is a numpy
array of indices; packet lengths live beside the data in ``segment.buf_len``. Ownership moves with
the index: whoever holds an index must either pass it on (enqueue, transmit) or free it.

The shared free stack is guarded by ``flock`` on the segment file: the kernel drops the lock if a
holder dies, so a crashed worker can never wedge the pool. Each handle keeps a local cache and
touches the shared stack only in bulk (like DPDK's per-lcore cache), so the lock costs one syscall
pair per few hundred packets, not per packet.

Large buffers (GSO aggregates, jumbo frames; see :mod:`spp.engine.shm`) have a stack of their own
and are taken with :meth:`BufferPool.alloc_large`; :meth:`BufferPool.free` takes both kinds and
sorts them by index. Every buffer carries its offload metadata (``vnet``, a ``struct
virtio_net_hdr`` per buffer; :mod:`spp.engine.offload`): :meth:`BufferPool.alloc` hands out
buffers whose metadata says "nothing to do", so a producer that knows nothing of offloads makes
plain frames.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading

import numpy as np

from spp.engine.shm import VNET_HDR_LEN, Segment

_max = np.maximum.reduce
CACHE_SIZE = 1024
BULK = 512
EMPTY = np.empty(0, np.uint32)


class _SharedLock:
    """The shared stacks to one thread of one process: a thread lock (flock does not exclude
    threads sharing the descriptor), then ``flock`` on the handle's own descriptor."""

    __slots__ = ("_fd", "_tlock")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._tlock = threading.Lock()

    def __enter__(self) -> None:
        self._tlock.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._tlock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._tlock.release()


class BufferPool:
    """A per-thread handle on the shared pool. Not thread-safe: give each thread its own."""

    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self.buf_size = seg.spec.buf_size
        self.data = seg.buf_data
        self.lengths = seg.buf_len
        self.stamps = seg.buf_ts
        #: per buffer: the whole ``struct virtio_net_hdr`` as 10 bytes, and its first two bytes
        #: (flags, gso_type) as one uint16, zero for a frame with nothing left to do
        self.vnet = seg.buf_vnet
        self.vnet_word = np.ndarray(
            (seg.nb_rows,), "<u2", buffer=seg.buf_vnet.data, offset=0, strides=(VNET_HDR_LEN,)
        )
        self.large_base = seg.large_base
        self.large_rows = seg.large_rows
        self.large_size = seg.large_rows * self.buf_size
        self._large_stack = seg.large_stack
        self._ctl = seg.pool_ctl
        self._stack = seg.free_stack
        # A private descriptor: flock excludes other open file descriptions, so every handle
        # needs its own for the lock to work between threads as well as processes. Reopened
        # through the segment's own descriptor, so it is the mapped file even when the name is
        # gone (a tool's private pool is unlinked as soon as it is mapped) or was replaced.
        try:
            self._lock_fd = os.open(f"/proc/self/fd/{seg.fd}", os.O_RDWR)
        except OSError:  # no /proc: the name still leads to the file
            self._lock_fd = os.open(seg.path, os.O_RDWR)
        self._shared = _SharedLock(self._lock_fd)
        self._cache = np.empty(CACHE_SIZE + 2 * BULK, np.uint32)
        self._cached = 0
        # The same memory as Python-indexable views, for a lone frame's path (:meth:`alloc_one`,
        # :meth:`free_one`, drivers' per-frame fast paths): on an idle panel every step runs
        # cold, and one numpy scalar access then costs several µs, a memoryview index a fraction.
        self._cache_mv = memoryview(self._cache)
        #: buffer bytes, lengths (u32), stamps (u64) and ``virtio_net_hdr`` bytes, flat
        self.data_mv = memoryview(self.data).cast("B")
        self.len_mv = memoryview(self.lengths).cast("B").cast("I")
        self.stamp_mv = memoryview(self.stamps).cast("B").cast("Q")
        self.vnet_mv = memoryview(self.vnet).cast("B")

    # -- shared stack --------------------------------------------------------------------------

    def _pop(self, which: int, stack: np.ndarray, n: int) -> np.ndarray:
        """Up to ``n`` buffers off shared stack ``which`` (0: ordinary, 1: large), as a view of
        ``stack`` to be copied before the lock is released. Called with ``self._shared`` held."""
        avail = self._ctl.item(which)
        k = min(n, avail)
        self._ctl[which] = avail - k
        return stack[avail - k : avail]

    def _push(self, which: int, stack: np.ndarray, bufs: np.ndarray) -> None:
        """``bufs`` onto shared stack ``which``. Called with ``self._shared`` held."""
        top = self._ctl.item(which)
        stack[top : top + len(bufs)] = bufs
        self._ctl[which] = top + len(bufs)

    def _take_shared(self, n: int) -> int:
        c = self._cached
        with self._shared:
            got = self._pop(0, self._stack, min(n, len(self._cache) - c))
            k = len(got)
            self._cache[c : c + k] = got
        self._cached = c + k
        return k

    def _give_shared(self, bufs: np.ndarray) -> None:
        with self._shared:
            self._push(0, self._stack, bufs)

    # -- the burst API -------------------------------------------------------------------------

    def alloc(self, n: int, *, plain: bool = True) -> np.ndarray:
        """Up to ``n`` free buffers (fewer only if the whole pool is exhausted).

        ``plain``: clear their offload metadata. A driver that writes every buffer's metadata
        itself passes False and saves the store.
        """
        if self._cached < n:
            if n > len(self._cache):
                return self._alloc_past_cache(n, plain)
            self._take_shared(max(n - self._cached, BULK))
        k = min(n, self._cached)
        if k == 0:
            return EMPTY
        self._cached -= k
        bufs = self._cache[self._cached : self._cached + k].copy()
        if plain:
            self.vnet_word[bufs] = 0
        return bufs

    def alloc_one(self) -> int:
        """One free buffer as a Python int, its metadata *not* cleared (the caller writes it);
        -1 if the pool is exhausted. :meth:`alloc` for a lone frame, without numpy."""
        if not self._cached and not self._take_shared(BULK):
            return -1
        self._cached -= 1
        return self._cache_mv[self._cached]

    def copy_one(self, buf: int) -> int:
        """A deep copy of ordinary buffer ``buf`` (frame, length, stamp, offload metadata) in a
        new buffer, as a Python int; -1 if the pool is exhausted. For a lone frame's path."""
        c = self.alloc_one()
        if c < 0:
            return -1
        n = self.len_mv[buf]
        size = self.buf_size
        self.data_mv[c * size : c * size + n] = self.data_mv[buf * size : buf * size + n]
        self.len_mv[c] = n
        self.stamp_mv[c] = self.stamp_mv[buf]
        v, w = c * VNET_HDR_LEN, buf * VNET_HDR_LEN
        self.vnet_mv[v : v + VNET_HDR_LEN] = self.vnet_mv[w : w + VNET_HDR_LEN]
        return c

    def free_one(self, buf: int) -> None:
        """:meth:`free` for one buffer given as a Python int."""
        c = self._cached
        if buf >= self.large_base or c >= len(self._cache):
            self.free(np.array((buf,), np.uint32))
            return
        self._cache_mv[c] = buf
        self._cached = c + 1

    def _alloc_past_cache(self, n: int, plain: bool) -> np.ndarray:
        """A burst larger than the whole cache (a long virtqueue's): what the cache holds, the
        rest straight from the shared stack."""
        c = self._cached
        with self._shared:
            bufs = np.concatenate((self._cache[:c], self._pop(0, self._stack, n - c)))
        self._cached = 0
        if plain and len(bufs):
            self.vnet_word[bufs] = 0
        return bufs

    def alloc_large(self, n: int) -> np.ndarray:
        """Up to ``n`` large buffers (``large_size`` bytes each), metadata cleared."""
        if n <= 0:
            return EMPTY
        with self._shared:
            bufs = self._pop(1, self._large_stack, n).copy()
        if len(bufs):
            self.vnet_word[bufs] = 0
        return bufs

    def is_large(self, bufs: np.ndarray) -> np.ndarray:
        return bufs >= self.large_base

    def capacity(self, bufs: np.ndarray) -> np.ndarray:
        """How many bytes each of ``bufs`` can hold."""
        return np.where(bufs >= self.large_base, self.large_size, self.buf_size)

    def _give_large(self, bufs: np.ndarray) -> None:
        with self._shared:
            self._push(1, self._large_stack, bufs)

    def free(self, bufs: np.ndarray) -> None:
        """Return buffers (ordinary or large) to the pool."""
        n = len(bufs)
        if n == 0:
            return
        if _max(bufs) >= self.large_base:
            large = bufs >= self.large_base
            self._give_large(np.asarray(bufs[large], np.uint32))
            bufs = bufs[~large]
            n = len(bufs)
            if n == 0:
                return
        if self._cached + n > len(self._cache):
            keep = CACHE_SIZE // 2
            if self._cached > keep:  # (never *raise* the count: slots above it are stale)
                self._give_shared(self._cache[keep : self._cached].copy())
                self._cached = keep
            if n > len(self._cache) - self._cached:
                self._give_shared(np.asarray(bufs, np.uint32))
                return
        self._cache[self._cached : self._cached + n] = bufs
        self._cached += n

    def free_shared(self, bufs: np.ndarray) -> None:
        """Return ordinary buffers straight to the shared stack, past this handle's cache: safe
        from another thread than the handle's (a port closed by the control thread while its
        worker goes on using the handle)."""
        if len(bufs):
            self._give_shared(np.asarray(bufs, np.uint32))

    def flush(self) -> None:
        """Give the local cache back (on shutdown, so nothing is stranded in a dead handle)."""
        if self._cached:
            self._give_shared(self._cache[: self._cached].copy())
            self._cached = 0

    def close(self) -> None:
        self.flush()
        os.close(self._lock_fd)
        for view in (self._cache_mv, self.data_mv, self.len_mv, self.stamp_mv, self.vnet_mv):
            with contextlib.suppress(BufferError):
                view.release()

    @property
    def shared_free(self) -> int:
        return self._ctl.item(0)

    @property
    def available(self) -> int:
        """Ordinary buffers free: the shared stack's and this handle's cache (not other
        handles' caches)."""
        return self._ctl.item(0) + self._cached

    @property
    def large_free(self) -> int:
        return self._ctl.item(1)

    # -- packet access (for drivers and tests; not for the hot path) ---------------------------

    def frame(self, buf: int, length: int | None = None) -> np.ndarray:
        """A writable view of buffer ``buf``'s first ``length`` bytes (default: its frame),
        for a large buffer too: the view runs over its consecutive rows."""
        n = int(self.lengths[buf]) if length is None else length
        o = int(buf) * self.buf_size
        return self._flat[o : o + n]

    @property
    def _flat(self) -> np.ndarray:
        return self.data.reshape(-1)

    def write(self, buf: int, frame: bytes) -> None:
        self.frame(buf, len(frame))[:] = np.frombuffer(frame, np.uint8)
        self.lengths[buf] = len(frame)

    def read(self, buf: int) -> bytes:
        return self.frame(buf).tobytes()

    def alloc_frames(self, frames: list[bytes]) -> np.ndarray:
        """Buffers holding ``frames``, large ones where needed (test and tool helper)."""
        big = [len(f) > self.buf_size for f in frames]
        bufs = self.alloc(len(frames) - sum(big))
        large = self.alloc_large(sum(big))
        if len(bufs) + len(large) < len(frames):
            self.free(bufs)
            self.free(large)
            raise MemoryError("packet pool exhausted")
        small_it, large_it = iter(bufs.tolist()), iter(large.tolist())
        out = np.array([next(large_it) if b else next(small_it) for b in big], np.uint32)
        for b, f in zip(out.tolist(), frames, strict=True):
            self.write(b, f)
        return out
