"""``nullpmd:N``: an endless source and a bottomless sink (DPDK's null PMD).

Receive hands out fresh 64-byte frames as fast as they are asked for; transmit frees everything
it is given. Useful to load a path without any kernel in the way, and as the demo's traffic source.
"""

from __future__ import annotations

import time

import numpy as np

from spp.engine.portid import PortId
from spp.engine.ports.base import RX_DROP, Port, PortContext

FRAME_LEN = 64
# 02:00:00:00:00:02 <- 02:00:00:00:00:01, ethertype 0x88b5 (IEEE local experimental): a frame no
# host will mistake for real traffic if a null source is patched onto a wire.
TEMPLATE = np.frombuffer(bytes.fromhex("02000000000202000000000188b5") + bytes(FRAME_LEN - 14), np.uint8)


class NullPort(Port):
    def __init__(self, uid: PortId, ctx: PortContext) -> None:
        super().__init__(uid, ctx)

    def rx_burst(self, max_n: int) -> np.ndarray:
        bufs = self.pool.alloc(max_n)
        n = len(bufs)
        if n < max_n:
            self.counters[RX_DROP] += max_n - n  # pool exhausted: say so rather than go quiet
        if n:
            self.pool.data[bufs, :FRAME_LEN] = TEMPLATE
            self.pool.lengths[bufs] = FRAME_LEN
            self.pool.stamps[bufs] = time.time_ns()
        return bufs

    def tx_burst(self, bufs: np.ndarray) -> int:
        self.pool.free(bufs)
        return len(bufs)
