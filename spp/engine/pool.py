"""The packet buffer pool (the role of DPDK's mempool ``MProc_pktmbuf_pool``).

Buffers are fixed-size slots in the shared segment, named by their index. A burst is a numpy
array of indices; packet lengths live beside the data in ``segment.buf_len``. Ownership moves with
the index: whoever holds an index must either pass it on (enqueue, transmit) or free it.

The shared free stack is guarded by ``flock`` on the segment file: the kernel drops the lock if a
holder dies, so a crashed worker can never wedge the pool. Each handle keeps a local cache and
touches the shared stack only in bulk (like DPDK's per-lcore cache), so the lock costs one syscall
pair per few hundred packets, not per packet.
"""

from __future__ import annotations

import fcntl
import os
import threading

import numpy as np

from spp.engine.shm import Segment

CACHE_SIZE = 1024
BULK = 512
EMPTY = np.empty(0, np.uint32)


class BufferPool:
    """A per-thread handle on the shared pool. Not thread-safe: give each thread its own."""

    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self.buf_size = seg.spec.buf_size
        self.data = seg.buf_data
        self.lengths = seg.buf_len
        self.stamps = seg.buf_ts
        self._ctl = seg.pool_ctl
        self._stack = seg.free_stack
        # A private descriptor: flock excludes other open file descriptions, so every handle
        # needs its own for the lock to work between threads as well as processes.
        self._lock_fd = os.open(seg.path, os.O_RDWR)
        self._tlock = threading.Lock()
        self._cache = np.empty(CACHE_SIZE + 2 * BULK, np.uint32)
        self._cached = 0

    # -- shared stack --------------------------------------------------------------------------

    def _take_shared(self, n: int) -> int:
        with self._tlock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                avail = self._ctl.item(0)
                k = min(n, avail, len(self._cache) - self._cached)
                if k:
                    c = self._cached
                    self._cache[c : c + k] = self._stack[avail - k : avail]
                    self._ctl[0] = avail - k
                    self._cached = c + k
                return k
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _give_shared(self, bufs: np.ndarray) -> None:
        with self._tlock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                top = self._ctl.item(0)
                self._stack[top : top + len(bufs)] = bufs
                self._ctl[0] = top + len(bufs)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- the burst API -------------------------------------------------------------------------

    def alloc(self, n: int) -> np.ndarray:
        """Up to ``n`` free buffers (fewer only if the whole pool is exhausted)."""
        if self._cached < n:
            self._take_shared(max(n - self._cached, BULK))
        k = min(n, self._cached)
        if k == 0:
            return EMPTY
        self._cached -= k
        return self._cache[self._cached : self._cached + k].copy()

    def free(self, bufs: np.ndarray) -> None:
        """Return buffers to the pool."""
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

    def flush(self) -> None:
        """Give the local cache back (on shutdown, so nothing is stranded in a dead handle)."""
        if self._cached:
            self._give_shared(self._cache[: self._cached].copy())
            self._cached = 0

    def close(self) -> None:
        self.flush()
        os.close(self._lock_fd)

    @property
    def shared_free(self) -> int:
        return self._ctl.item(0)

    # -- packet access (for drivers and tests; not for the hot path) ---------------------------

    def write(self, buf: int, frame: bytes) -> None:
        self.data[buf, : len(frame)] = np.frombuffer(frame, np.uint8)
        self.lengths[buf] = len(frame)

    def read(self, buf: int) -> bytes:
        return self.data[buf, : int(self.lengths[buf])].tobytes()

    def alloc_frames(self, frames: list[bytes]) -> np.ndarray:
        """Buffers holding ``frames`` (test and tool helper)."""
        bufs = self.alloc(len(frames))
        if len(bufs) < len(frames):
            self.free(bufs)
            raise MemoryError("packet pool exhausted")
        for b, f in zip(bufs.tolist(), frames, strict=True):
            self.write(b, f)
        return bufs
