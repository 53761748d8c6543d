"""Single-producer, single-consumer rings of buffer indices in shared memory (``ring:N``).

The role of DPDK's ``rte_ring`` created with ``RING_F_SP_ENQ | RING_F_SC_DEQ``: one FIFO used by
whoever transmits into ``ring:N`` and whoever receives from it. Only indices cross the ring; the
packet bytes stay where they are in the pool.

Head (producer) and tail (consumer) are free-running 64-bit counters on separate cache lines. The
producer writes the slots and *then* publishes the head; the consumer reads the slots and *then*
publishes the tail. Each of those writes is a separate opaque C call from Python, so neither the
compiler nor (on x86-64, which is TSO) the CPU can reorder them. A weakly ordered CPU would need a
release/acquire fence here; see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import numpy as np

from spp.engine.shm import Segment

HEAD, TAIL = 0, 8  # uint64 positions in the control block: bytes 0 and 64
EMPTY = np.empty(0, np.uint32)


class Ring:
    def __init__(self, seg: Segment, ring_id: int) -> None:
        self.id = ring_id
        self._ctl, self._slots = seg.ring_views(ring_id)
        self.size = len(self._slots)
        self._mask = self.size - 1

    def __len__(self) -> int:
        return self._ctl.item(HEAD) - self._ctl.item(TAIL)

    @property
    def free_count(self) -> int:
        return self.size - len(self)

    def enqueue(self, bufs: np.ndarray) -> int:
        """Enqueue as many of ``bufs`` as fit; return how many (the caller keeps the rest)."""
        ctl = self._ctl
        head = ctl.item(HEAD)
        n = min(len(bufs), self.size - (head - ctl.item(TAIL)))
        if n <= 0:
            return 0
        start = head & self._mask
        end = start + n
        if end <= self.size:
            self._slots[start:end] = bufs[:n]
        else:
            k = self.size - start
            self._slots[start:] = bufs[:k]
            self._slots[: n - k] = bufs[k:n]
        ctl[HEAD] = head + n
        return n

    def dequeue(self, max_n: int) -> np.ndarray:
        """Take up to ``max_n`` indices from the ring."""
        ctl = self._ctl
        tail = ctl.item(TAIL)
        n = min(ctl.item(HEAD) - tail, max_n)
        if n <= 0:
            return EMPTY
        start = tail & self._mask
        end = start + n
        if end <= self.size:
            out = self._slots[start:end].copy()
        else:
            out = np.concatenate((self._slots[start:], self._slots[: end - self.size]))
        ctl[TAIL] = tail + n
        return out

    def reset(self) -> None:
        """Forget the contents (primary only, at creation): not safe while in use."""
        self._ctl[HEAD] = 0
        self._ctl[TAIL] = 0
