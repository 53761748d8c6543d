"""``virtio_user:N``: our virtio-net driver as a port (DPDK's ``net_virtio_user`` vdev).

It attaches the panel to a vhost-user back-end as a VM's NIC would: by default as client of
``<dir>/sockN`` (so a process can plug into another panel's ``vhost:N``, or into any vhost-user
switch), or where ``--vdev net_virtio_userN,path=PATH[,server=1]`` says. With ``server=1`` it
creates the socket and waits for a back-end in client mode. ``queue_size=N`` sets the size of
both virtqueues (default 4096, zero-copy 1024; DPDK's is 256: a Python driver's cost is mostly
per burst, so a busy worker moves bursts of up to 1024 packets, and a ring of several such
bursts lets the back-end empty one while the driver fills the next). With ``zero_copy=1`` the
driver shares the process's packet pool with the back-end and posts pool buffers as they are,
where the pool can be shared (not on hugetlbfs); by default it copies through slots of its own,
which costs less for small frames and keeps the back-end's work down (bench/RESULTS.md).
Until the back-end is there,
transmit refuses (counted as ``tx_drop``) and receive returns nothing; the driver reconnects by
itself when the back-end comes back.
"""

from __future__ import annotations

import os

import numpy as np

from spp.engine.offload import XS, check_burst
from spp.engine.portid import PortId
from spp.engine.ports.base import (
    PENDING,
    RX_DROP,
    TX_DROP,
    WAKES,
    PortContext,
    PortError,
)
from spp.engine.ports.vhost import VirtioPort, claim
from spp.engine.virtio.frontend import VirtioError, VirtioUser

EMPTY = np.empty(0, np.uint32)


def socket_path(uid: PortId, ctx: PortContext) -> str:
    explicit = ctx.options.get(f"virtio_user:{uid.num}")
    if explicit:
        return explicit
    return os.path.join(ctx.options.get("vhost-dir") or "/tmp", f"sock{uid.num}")


class VirtioUserPort(VirtioPort):
    def __init__(self, uid: PortId, ctx: PortContext, event_idx: bool = True, offloads: bool = True) -> None:
        super().__init__(uid, ctx)
        self.path = socket_path(uid, ctx)
        server = ctx.options.get(f"virtio_user:{uid.num}:server") == "1"
        size = ctx.options.get(f"virtio_user:{uid.num}:queue_size")
        if server and not os.path.isdir(os.path.dirname(self.path) or "."):
            raise PortError(f"{uid}: socket directory {os.path.dirname(self.path)} does not exist")
        try:
            zero_copy = ctx.options.get(f"virtio_user:{uid.num}:zero_copy") == "1"
            self.driver: VirtioUser | None = VirtioUser(
                self.path,
                server=server,
                queue_size=int(size) if size else None,
                name=str(uid),
                event_idx=event_idx,
                offloads=offloads,
                pool=self.pool if zero_copy else None,
            )
        except VirtioError as e:
            raise PortError(f"{uid}: {e}") from None

    def _end(self) -> VirtioUser | None:
        return self.driver

    def tx_burst(self, bufs: np.ndarray) -> int:
        drv = self.driver
        if drv is None or not len(bufs):
            return 0
        refused = int(self.xstats[XS["tx_refused"]])
        out, taken = drv.send(self.pool, bufs, self.xstats)
        self.counters[TX_DROP] += int(self.xstats[XS["tx_refused"]]) - refused
        return claim(self, bufs, out, taken)

    def rx_burst(self, max_n: int) -> np.ndarray:
        drv = self.driver
        if drv is None:
            return EMPTY
        too_long = drv.rx_too_long
        bufs = drv.rx_burst(self.pool, max_n)
        if drv.rx_too_long != too_long:
            self.xstats[XS["rx_too_long"]] += drv.rx_too_long - too_long
            self.counters[RX_DROP] += drv.rx_too_long - too_long
        self._saw(bufs)
        if drv.meta_seen and len(bufs):
            n = len(bufs)
            bufs = check_burst(self.pool, bufs, self.xstats, "rx_bad_vnet")
            self.counters[RX_DROP] += n - len(bufs)
        return bufs

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
