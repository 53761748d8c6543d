"""Single-producer, single-consumer rings of buffer indices in shared memory (``ring:N``).

The role of DPDK's ``rte_ring`` created with ``RING_F_SP_ENQ | RING_F_SC_DEQ``: one FIFO used by
whoever transmits into ``ring:N`` and whoever receives from it. Only indices cross the ring; the
packet bytes stay where they are in the pool.

Head (producer) and tail (consumer) are free-running 64-bit counters on separate cache lines. The
producer writes the slots and *then* publishes the head; the consumer reads the slots and *then*
publishes the tail. Each of those writes is a separate opaque C call from Python, so neither the
compiler nor (on x86-64, which is TSO) the CPU can reorder them. A weakly ordered CPU would need a
release/acquire fence here; see docs/ARCHITECTURE.md.

A ring also carries a doorbell (:mod:`spp.engine.doorbell`): the consumer may announce that it is
going to sleep, and the producer then wakes it after publishing. The head is published with a
locked add, which is the full barrier that handshake needs.
"""

from __future__ import annotations

import numpy as np

from spp.engine import doorbell
from spp.engine.doorbell import ASLEEP, NO_BELL, WAITER
from spp.engine.shm import Segment

HEAD, TAIL = 0, 8  # uint64 positions in the control block: bytes 0 and 64
EMPTY = np.empty(0, np.uint32)


class Ring:
    def __init__(self, seg: Segment, ring_id: int) -> None:
        self.id = ring_id
        self._ctl, self._slots = seg.ring_views(ring_id)
        self.size = len(self._slots)
        self._mask = self.size - 1
        self._head_addr = self._ctl.ctypes.data + 8 * HEAD
        self._asleep_addr = self._ctl.ctypes.data + 8 * ASLEEP
        self._bell = doorbell.Bell(self._ctl) if doorbell.AVAILABLE else None
        # Python-int views for one index at a time (:meth:`put_one`, :meth:`take_one`)
        self._ctl_mv = memoryview(self._ctl).cast("B").cast("Q")
        self._slots_mv = memoryview(self._slots).cast("B").cast("I")

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
        self._publish(head, n)
        return n

    def _publish(self, head: int, n: int) -> None:
        """Make ``n`` slots written from ``head`` on visible, then wake the consumer if it
        announced its sleep (the doorbell's producer side)."""
        bell = self._bell
        if bell is None:
            self._ctl_mv[HEAD] = head + n
        else:
            doorbell.fetch_add(self._head_addr, n)  # publish, with the barrier before the next load
            if self._ctl_mv[ASLEEP]:
                bell.ring()

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

    def put_one(self, buf: int) -> bool:
        """:meth:`enqueue` for one index as a Python int (a lone packet: no numpy at all)."""
        ctl = self._ctl_mv
        head = ctl[HEAD]
        if head - ctl[TAIL] >= self.size:
            return False
        self._slots_mv[head & self._mask] = buf
        self._publish(head, 1)
        return True

    def take_one(self) -> int:
        """The index at the tail when it is the only one in the ring; else -1 (empty) or -2
        (more: :meth:`dequeue` them), as :meth:`Port.rx_one` answers."""
        ctl = self._ctl_mv
        tail = ctl[TAIL]
        waiting = ctl[HEAD] - tail
        if waiting != 1:
            return -1 if not waiting else -2
        buf = self._slots_mv[tail & self._mask]
        ctl[TAIL] = tail + 1
        return buf

    # -- the consumer's side of the doorbell -----------------------------------------------------

    def arm(self, waiter: int) -> bool:
        """Announce that the consumer named ``waiter`` (:func:`doorbell.new_waiter`) is going to
        sleep; return True if it may, i.e. the ring is still empty and producers can wake it.
        Call :meth:`disarm` after the sleep (or instead of it)."""
        ctl = self._ctl
        if self._bell is None or ctl.item(NO_BELL):
            return False
        if ctl.item(WAITER) != waiter:
            ctl[WAITER] = waiter  # before ASLEEP, which the exchange below orders after it
        doorbell.exchange(self._asleep_addr, 1)
        return ctl.item(HEAD) == ctl.item(TAIL)

    def disarm(self) -> None:
        self._ctl[ASLEEP] = 0

    @property
    def wakes(self) -> bool:
        """Whether a sleeping consumer is woken by this ring's producers (else it must poll)."""
        return self._bell is not None and not self._ctl.item(NO_BELL)

    def close(self) -> None:
        if self._bell is not None:
            self._bell.close()

    def reset(self) -> None:
        """Forget the contents (primary only, at creation): not safe while in use."""
        self._ctl[:] = 0
