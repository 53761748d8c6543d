"""``vhost:N``: a vhost-user port, the socket a VM's or container's virtio-net attaches to.

SPP's ``eth_vhostN,iface=/tmp/sockN``: what the port transmits the guest receives, what the
guest transmits the port receives. Offloads are negotiated with the guest: its packets keep the
metadata of their virtio-net header (partial checksums, TCP/UDP aggregates in large buffers), and
what the port transmits keeps it too where the guest negotiated the matching GUEST_* feature; the
rest is finished in software first (:func:`spp.engine.offload.prepare`). Server mode (default)
creates ``<dir>/sockN`` and waits for QEMU or a ``net_virtio_user`` application to connect; with
``--vhost-client`` the port connects to a socket the VM's QEMU owns, and keeps retrying until it
appears (networking-spp adds ports before VMs start) or after it goes away. The directory is
``/tmp`` unless the process was given ``--vhost-dir``.

The device (socket, control thread, rings) is shared by every handle of ``vhost:N`` in the
process: spp_vf opens ports once per worker lane, and one lane may receive from the port while
another transmits to it. While no guest is attached, transmit refuses everything (counted as
``tx_drop`` by the forwarder) and receive returns nothing.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

import numpy as np

from spp.engine.offload import XS, invalid_buf
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId
from spp.engine.ports.base import (
    NOTHING,
    PENDING,
    RX_DROP,
    SOME,
    TX_DROP,
    WAKES,
    Port,
    PortContext,
    PortError,
)
from spp.engine.virtio.backend import VhostDevice, VhostError

DEFAULT_DIR = "/tmp"

_devices: dict[str, tuple[VhostDevice, int]] = {}
_devices_lock = threading.Lock()


def socket_path(uid: PortId, ctx: PortContext) -> str:
    """``<dir>/sockN`` as SPP names it; ``ctx.options["vhost:N"]`` (a ``--vdev iface=``) wins."""
    explicit = ctx.options.get(f"vhost:{uid.num}")
    if explicit:
        return explicit
    return os.path.join(ctx.options.get("vhost-dir") or DEFAULT_DIR, f"sock{uid.num}")


def acquire(path: str, client: bool, name: str) -> VhostDevice:
    with _devices_lock:
        entry = _devices.get(path)
        if entry is not None:
            device, refs = entry
            if device.client != client:
                raise PortError(
                    f"{name}: {path} is already used in {'client' if device.client else 'server'} mode"
                )
            _devices[path] = (device, refs + 1)
            return device
        parent = os.path.dirname(path) or "."
        if not os.path.isdir(parent):
            raise PortError(f"{name}: socket directory {parent} does not exist")
        try:
            device = VhostDevice(path, client, name=name)
        except VhostError as e:
            raise PortError(f"{name}: {e}") from None
        _devices[path] = (device, 1)
        return device


def release(device: VhostDevice) -> None:
    with _devices_lock:
        entry = _devices.get(device.path)
        if entry is None or entry[0] is not device:
            return
        refs = entry[1] - 1
        if refs:
            _devices[device.path] = (device, refs)
            return
        del _devices[device.path]
    device.close()


def claim(port: Port, bufs: np.ndarray, out: np.ndarray, taken: int) -> int:
    """The transmit result for the caller of ``tx_burst(bufs)`` when ``out`` was sent instead
    (offload.finish segmented or dropped some): the port owns the whole burst then, frees what
    the peer refused and counts it, as the pcap port does."""
    if out is bufs:
        return taken
    if taken < len(out):
        port.pool.free(out[taken:])
        port.counters[TX_DROP] += len(out) - taken
    return len(bufs)


class VirtioEnd(Protocol):
    """What a virtio port's lone-packet path needs of its device (back-end or driver)."""

    def receive_one(self, pool: BufferPool) -> int: ...

    def transmit_one(self, pool: BufferPool, buf: int) -> int: ...


class VirtioPort(Port):
    """What ``vhost:N`` and ``virtio_user:N`` share: the lone-packet path over their device
    (:meth:`Port.rx_one`), which answers SOME without a look at the ring while packets come in
    runs (rx_burst's last burst held more than one: under load, that look would cost every
    worker pass more than it could save)."""

    needs_polling = False
    _busy = False

    def _end(self) -> VirtioEnd | None:
        """The device, or None once closed."""
        raise NotImplementedError

    def _saw(self, bufs: np.ndarray) -> np.ndarray:
        """rx_burst's result, noted (runs or not) on its way out."""
        self._busy = len(bufs) > 1
        return bufs

    def rx_one(self) -> int:
        if self._busy:
            return SOME
        end = self._end()
        if end is None:
            return NOTHING
        pool = self.pool
        b = end.receive_one(pool)
        # (a header the device did not read was written as "nothing to do", which is valid)
        if b >= 0 and invalid_buf(pool, b, pool.len_mv[b]):
            pool.free_one(b)  # nonsense metadata: dropped and counted, as check_burst does
            self.xstats[XS["rx_bad_vnet"]] += 1
            self.ctr[RX_DROP] += 1
            return NOTHING  # (more may wait: the worker looks again before it sleeps)
        return b

    def tx_one(self, buf: int) -> int:
        end = self._end()
        if end is not None:
            taken = end.transmit_one(self.pool, buf)
            if taken >= 0:
                return taken
        return super().tx_one(buf)


class VhostPort(VirtioPort):
    def __init__(self, uid: PortId, ctx: PortContext) -> None:
        super().__init__(uid, ctx)
        self.path = socket_path(uid, ctx)
        client = ctx.vhost_client or ctx.options.get(f"vhost:{uid.num}:client") == "1"
        self.device: VhostDevice | None = acquire(self.path, client, str(uid))

    def _end(self) -> VhostDevice | None:
        return self.device

    def rx_burst(self, max_n: int) -> np.ndarray:
        device = self.device
        if device is None:
            return np.empty(0, np.uint32)
        bufs, dropped = device.receive(self.pool, max_n, self.xstats)
        if dropped:
            self.counters[RX_DROP] += dropped
        return self._saw(bufs)

    def tx_burst(self, bufs: np.ndarray) -> int:
        device = self.device
        if device is None or not len(bufs):
            return 0
        out, taken, too_large = device.transmit(self.pool, bufs, self.xstats)
        if too_large:
            self.counters[TX_DROP] += too_large
        return claim(self, bufs, out, taken)

    def fileno(self) -> int | None:
        return self.device.fileno() if self.device is not None else None

    def prepare_sleep(self, waiter: int) -> int:
        device = self.device
        return PENDING if device is not None and device.prepare_sleep() else WAKES

    def info(self) -> dict[str, object]:
        return self.device.info() if self.device is not None else {}

    def close(self) -> None:
        device, self.device = self.device, None
        if device is not None:
            release(device)
