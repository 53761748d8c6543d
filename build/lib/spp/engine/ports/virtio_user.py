"""``virtio_user:N``: our virtio-net driver as a port (DPDK's ``net_virtio_user`` vdev).

It attaches the panel to a vhost-user back-end as a VM's NIC would: by default as client of
``<dir>/sockN`` (so a process can plug into another panel's ``vhost:N``, or into any vhost-user
switch), or where ``--vdev net_virtio_userN,path=PATH[,server=1]`` says. With ``server=1`` it
creates the socket and waits for a back-end in client mode. Until the back-end is there,
transmit refuses (counted as ``tx_drop``) and receive returns nothing; the driver reconnects by
itself when the back-end comes back.
"""

from __future__ import annotations

import os

import numpy as np

from spp.engine import offload
from spp.engine.portid import PortId
from spp.engine.ports.base import PENDING, TX_DROP, WAKES, Port, PortContext, PortError
from spp.engine.ports.vhost import claim
from spp.engine.virtio.defs import NET_HDR_LEN
from spp.engine.virtio.frontend import TX_SLOT, VirtioError, VirtioUser

MAX_FRAME = TX_SLOT - NET_HDR_LEN

EMPTY = np.empty(0, np.uint32)


def socket_path(uid: PortId, ctx: PortContext) -> str:
    explicit = ctx.options.get(f"virtio_user:{uid.num}")
    if explicit:
        return explicit
    return os.path.join(ctx.options.get("vhost-dir") or "/tmp", f"sock{uid.num}")


class VirtioUserPort(Port):
    needs_polling = False

    def __init__(self, uid: PortId, ctx: PortContext, event_idx: bool = True) -> None:
        super().__init__(uid, ctx)
        self.path = socket_path(uid, ctx)
        server = ctx.options.get(f"virtio_user:{uid.num}:server") == "1"
        if server and not os.path.isdir(os.path.dirname(self.path) or "."):
            raise PortError(f"{uid}: socket directory {os.path.dirname(self.path)} does not exist")
        try:
            self.driver: VirtioUser | None = VirtioUser(
                self.path, server=server, name=str(uid), event_idx=event_idx
            )
        except VirtioError as e:
            raise PortError(f"{uid}: {e}") from None

    def rx_burst(self, max_n: int) -> np.ndarray:
        drv = self.driver
        return drv.rx_burst(self.pool, max_n) if drv is not None else EMPTY

    def tx_burst(self, bufs: np.ndarray) -> int:
        drv = self.driver
        if drv is None or not len(bufs):
            return 0
        out = offload.finish(self.pool, bufs, self.xstats)
        long = self.pool.lengths[out] > MAX_FRAME
        if long.any():  # a jumbo frame has no slot here (the back-end would need merged tx)
            self.xstats[offload.XS["tx_refused"]] += int(np.count_nonzero(long))
            self.pool.free(out[long])
            self.counters[TX_DROP] += int(np.count_nonzero(long))
            out = out[~long]
        return claim(self, bufs, out, drv.tx_burst(self.pool, out))

    def fileno(self) -> int | None:
        return self.driver.fileno() if self.driver is not None else None

    def prepare_sleep(self, waiter: int) -> int:
        drv = self.driver
        return PENDING if drv is not None and drv.prepare_sleep() else WAKES

    def info(self) -> dict[str, object]:
        return self.driver.info() if self.driver is not None else {}

    def close(self) -> None:
        drv, self.driver = self.driver, None
        if drv is not None:
            drv.close()
