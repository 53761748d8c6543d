"""``nullpmd:N``: an endless source and a bottomless sink (DPDK's null PMD).

Receive hands out real pool buffers (the caller owns them, as with any port) holding 64-byte
frames, as many as asked for; transmit frees everything it is given. Useful to load a path without
any kernel in the way, and as the demo's traffic source.

Like DPDK's null PMD (``rte_pktmbuf_alloc_bulk``, then set ``data_len``) the source writes only
what a frame needs, not 64 bytes of data per frame: the length and a 16-byte Ethernet header, each
one vectorised store per burst (the header as one 16-byte element per buffer). The rest of the
frame is whatever the buffer held, as in DPDK; the header alone makes it a frame no host takes for
real traffic if a null source is patched onto a wire. Nothing was received, so there is no
receive time: ``buf_ts`` is left alone, as DPDK's null PMD leaves the mbuf's timestamp.
"""

from __future__ import annotations

import numpy as np

from spp.engine.portid import PortId
from spp.engine.ports.base import RX_DROP, Port, PortContext

FRAME_LEN = 64
# 02:00:00:00:00:02 <- 02:00:00:00:00:01, ethertype 0x88b5 (IEEE local experimental), then zeros.
TEMPLATE = np.frombuffer(bytes.fromhex("02000000000202000000000188b5") + bytes(FRAME_LEN - 14), np.uint8)
HEADER = np.dtype((np.void, 16))


class NullPort(Port):
    def __init__(self, uid: PortId, ctx: PortContext) -> None:
        super().__init__(uid, ctx)
        data = self.pool.data
        # Every buffer's first 16 bytes as one element: a header store is one element per frame.
        self._headers = np.ndarray((len(data),), HEADER, buffer=data, strides=(data.strides[0],))
        self._header = TEMPLATE[:16].copy().view(HEADER)[0]

    def rx_burst(self, max_n: int) -> np.ndarray:
        pool = self.pool
        bufs = pool.alloc(max_n)
        n = len(bufs)
        if n < max_n:
            self.counters[RX_DROP] += max_n - n  # pool exhausted: say so rather than go quiet
        if n:
            # intp indices: a uint32 index array would be converted on every fancy store.
            at = bufs.astype(np.intp)
            self._headers[at] = self._header
            pool.lengths[at] = FRAME_LEN
        return bufs

    def tx_burst(self, bufs: np.ndarray) -> int:
        self.pool.free(bufs)
        return len(bufs)
