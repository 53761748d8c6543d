"""``ring:N``: a port over a shared ring. Transmit enqueues, receive dequeues; zero copy."""

from __future__ import annotations

import numpy as np

from spp.engine.portid import PortId
from spp.engine.ports.base import PENDING, POLL, WAKES, Port, PortContext, PortError
from spp.engine.ring import Ring


class RingPort(Port):
    """A ring wakes its sleeping consumer through the ring's doorbell (:mod:`spp.engine.doorbell`)."""

    needs_polling = False

    def __init__(self, uid: PortId, ctx: PortContext) -> None:
        super().__init__(uid, ctx)
        n = ctx.seg.spec.nb_rings
        if not 0 <= uid.num < n:
            raise PortError(
                f"ring:{uid.num} does not exist: the primary created ring:0..ring:{n - 1} (-n {n})"
            )
        self.ring = Ring(ctx.seg, uid.num)
        # Ring counters are shared and survive the port (SPP's client_stats): bind to our row.
        self.counters = ctx.seg.ring_stats[ctx.client_id, uid.num]

    def rx_burst(self, max_n: int) -> np.ndarray:
        return self.ring.dequeue(max_n)

    def tx_burst(self, bufs: np.ndarray) -> int:
        return self.ring.enqueue(bufs)

    def rx_one(self) -> int:
        return self.ring.take_one()

    def tx_one(self, buf: int) -> int:
        return 1 if self.ring.put_one(buf) else 0

    def prepare_sleep(self, waiter: int) -> int:
        if self.ring.arm(waiter):
            return WAKES
        return PENDING if len(self.ring) else POLL

    def end_sleep(self) -> None:
        self.ring.disarm()

    def close(self) -> None:
        self.ring.close()
