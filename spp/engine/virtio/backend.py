"""The vhost-user back-end: one virtio-net device served on a UNIX socket (``vhost:N``).

A :class:`VhostDevice` owns the socket and a control thread that speaks the vhost-user protocol
(server: listen and accept one front-end at a time; client: connect, and retry until the
front-end's socket appears and whenever it goes away). The packet path is
:meth:`VhostDevice.receive` / :meth:`VhostDevice.transmit`, called by the worker through the port.

The two threads meet at one lock. The worker holds it for a burst; the control thread takes it
to swap the set of running rings (``_rings``), so the worker sees either the old rings or the new
ones, always between bursts — the same rule as the worker's plans. A ring is (re)built from the
negotiated state whenever a message changes it; before guest memory is unmapped every ring using
it is stopped under the lock. Anything the front-end gets wrong — garbage, a close mid-handshake,
impossible memory regions, descriptor indexes or addresses — is logged and counted in
``errors`` and costs at most the connection or the ring, never the worker.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import struct
import threading
from dataclasses import dataclass

import numpy as np

from spp.engine import offload
from spp.engine.peer import peer_of
from spp.engine.pool import BufferPool
from spp.engine.ports.base import NOTHING
from spp.engine.virtio import defs as d
from spp.engine.virtio import unixsock
from spp.engine.virtio.memory import GuestMemory, MemoryError_, Region
from spp.engine.virtio.message import Message, PeerGone, ProtocolError, recv_message, send_reply, u64
from spp.engine.virtio.ring import EMPTY, DeviceRing, RingError, ring_bytes

log = logging.getLogger(__name__)

RX_QUEUE, TX_QUEUE = 0, 1  # the driver's receive queue (we transmit on it) and transmit queue
NUM_QUEUES = 2
RECONNECT_SECONDS = 0.5

#: What we offer: the offloads too, since every buffer carries a virtio-net header's metadata.
DEVICE_FEATURES = (
    d.NET_OFFLOADS
    | 1 << d.F_VERSION_1
    | 1 << d.NET_F_MRG_RXBUF
    | 1 << d.F_ANY_LAYOUT
    | 1 << d.RING_F_EVENT_IDX
    | 1 << d.F_NOTIFY_ON_EMPTY
    | 1 << d.USER_F_PROTOCOL_FEATURES
)
PROTOCOL_FEATURES = 1 << d.PROTOCOL_F_MQ | 1 << d.PROTOCOL_F_REPLY_ACK | 1 << d.PROTOCOL_F_RESET_DEVICE


class VhostError(Exception):
    """The device cannot be created (the message says why, for the user)."""


@dataclass
class QueueConfig:
    """What the front-end told us about one virtqueue."""

    num: int = 0
    desc: int = 0
    used: int = 0
    avail: int = 0
    addr_set: bool = False
    base: int = 0
    kick_fd: int | None = None
    kick_set: bool = False
    call_fd: int | None = None
    err_fd: int | None = None
    enabled: bool = False

    def close_fds(self) -> None:
        for name in ("kick_fd", "call_fd", "err_fd"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)


class VhostDevice:
    def __init__(self, path: str, client: bool, features: int = DEVICE_FEATURES, name: str = "") -> None:
        self.path = path
        self.client = client
        self.name = name or path
        self.offered = features
        self.lock = threading.Lock()
        self._rings: list[DeviceRing | None] = [None] * NUM_QUEUES
        self.epoll = select.epoll()  # the worker polls this: it holds the transmit queue's kick
        self.errors = 0
        self.connections = 0
        self.connected = False
        self.peer: dict[str, object] | None = None  # the front-end's process (spp.engine.peer)
        self.last_error = ""
        self._queues = [QueueConfig() for _ in range(NUM_QUEUES)]
        self._mem: GuestMemory | None = None
        self.features = 0
        self.protocol_features = 0
        self._conn: socket.socket | None = None
        self._stop_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        if not client:
            self._listener, self._inode = unixsock.listen(path, VhostError)
        self._thread = threading.Thread(target=self._serve, name=f"vhost-user {self.name}", daemon=True)
        self._thread.start()

    # -- the packet path (worker thread) -------------------------------------------------------

    def receive(self, pool: BufferPool, limit: int, xstats: np.ndarray) -> tuple[np.ndarray, int]:
        """Packets the driver transmitted: (buffers, unusable packets dropped). Drops by reason
        (too long, nonsense offload metadata) are counted in ``xstats`` too."""
        with self.lock:
            ring = self._rings[TX_QUEUE]
            if ring is None:
                return EMPTY, 0
            before = ring.rx_too_long
            try:
                bufs, dropped = ring.receive(pool, limit)
                if len(bufs):
                    ring.want_kicks(False)  # busy: we will look again anyway
            except Exception as e:  # whatever the driver wrote, the worker carries on
                self._ring_failed(TX_QUEUE, str(e))
                return EMPTY, 0
            if ring.rx_too_long != before:
                xstats[offload.XS["rx_too_long"]] += ring.rx_too_long - before
            if ring.broken:
                self._ring_failed(TX_QUEUE, ring.broken)
        if ring.read_vnet and ring.meta_seen and len(bufs):
            n = len(bufs)
            bufs = offload.check_burst(pool, bufs, xstats, "rx_bad_vnet")
            dropped += n - len(bufs)
        return bufs, dropped

    def receive_one(self, pool: BufferPool) -> int:
        """A lone packet the driver transmitted, with Python ints only: what
        :meth:`Port.rx_one` answers. Its offload metadata is the port's to check."""
        with self.lock:
            ring = self._rings[TX_QUEUE]
            if ring is None:
                return NOTHING
            try:
                return ring.receive_one(pool)
            except Exception as e:  # whatever the driver wrote, the worker carries on
                self._ring_failed(TX_QUEUE, str(e))
                return NOTHING

    def transmit_one(self, pool: BufferPool, buf: int) -> int:
        """Hand a lone plain packet to the driver with Python ints only: 1 (taken), 0 (no guest,
        or no receive buffer: the caller drops it) or -1 (:meth:`transmit` must deal with it)."""
        with self.lock:
            ring = self._rings[RX_QUEUE]
            if ring is None:
                return 0
            try:
                return ring.deliver_one(pool, buf)
            except Exception as e:  # whatever the driver wrote, the worker carries on
                self._ring_failed(RX_QUEUE, str(e))
                return 0

    def transmit(self, pool: BufferPool, bufs: np.ndarray, xstats: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Hand packets to the driver: ``(sent, taken, too_large)``. ``sent`` is ``bufs`` made fit
        for what the driver negotiated (:func:`offload.prepare`: it may be longer, or other
        buffers, and the port owns ``bufs`` then), ``taken`` how many of ``sent`` the driver
        took, ``too_large`` how many of those were dropped as too large for its buffers."""
        with self.lock:  # (held while preparing, so the features cannot change in between)
            ring = self._rings[RX_QUEUE]
            if ring is None:
                return bufs, 0, 0
            sent = offload.prepare(pool, bufs, xstats, self.deliver_caps)
            before = ring.too_large
            try:
                taken = ring.deliver(pool, sent, d.has(self.features, d.NET_F_MRG_RXBUF))
            except Exception as e:  # whatever the driver wrote, the worker carries on
                self._ring_failed(RX_QUEUE, str(e))
                return sent, 0, 0
            return sent, taken, ring.too_large - before

    @property
    def deliver_caps(self) -> int:
        """The offloads the driver takes on its receive queue (``offload.CAN_*``)."""
        return d.driver_rx_caps(self.features)

    def fileno(self) -> int:
        return self.epoll.fileno()

    def prepare_sleep(self) -> bool:
        """The worker is about to sleep: ask the driver for kicks again, drain the kick counter;
        True when packets slipped in meanwhile (then it must not sleep)."""
        with self.lock:
            ring = self._rings[TX_QUEUE]
            if ring is None:
                return False  # a new ring's first kick (or a pending one) wakes the worker
            try:
                return ring.rearm()
            except Exception as e:  # memory gone bad under us: the ring stops, we can sleep
                self._ring_failed(TX_QUEUE, str(e))
                return False

    @property
    def running(self) -> bool:
        return all(r is not None for r in self._rings)

    def _ring_failed(self, index: int, why: str) -> None:
        """Stop a ring the driver corrupted (lock held). It restarts when set up again."""
        self.errors += 1
        self.last_error = f"queue {index}: {why}"
        log.error("%s: queue %d stopped: %s", self.name, index, why)
        self._park(index)

    # -- the socket ----------------------------------------------------------------------------

    def _serve(self) -> None:
        while not unixsock.is_signalled(self._stop_fd):
            conn = self._next_connection()
            if conn is None:
                continue
            self._conn = conn
            self.connections += 1
            self.connected = True
            self.peer = peer_of(conn)
            log.info("%s: front-end connected: %s", self.name, self.peer)
            try:
                while unixsock.wait_readable(conn.fileno(), self._stop_fd, None):
                    msg = recv_message(conn)
                    try:
                        self._handle(conn, msg)
                    finally:
                        msg.close_fds()
            except PeerGone:
                log.info("%s: front-end disconnected", self.name)
            except (ProtocolError, OSError, struct.error) as e:
                self.errors += 1
                self.last_error = str(e)
                log.error("%s: dropping the connection: %s", self.name, e)
            except Exception as e:  # a bug of ours must not kill the device either
                self.errors += 1
                self.last_error = repr(e)
                log.exception("%s: dropping the connection", self.name)
            finally:
                self.connected = False
                self.peer = None
                self._conn = None
                conn.close()
                self._reset()

    def _next_connection(self) -> socket.socket | None:
        if self._listener is not None:
            if not unixsock.wait_readable(self._listener.fileno(), self._stop_fd, None):
                return None
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return None
            return conn
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            if e.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN):
                self.last_error = f"connect {self.path}: {e.strerror}"
            unixsock.wait_readable(self._stop_fd, self._stop_fd, RECONNECT_SECONDS)
            return None
        return sock

    def close(self) -> None:
        """Stop serving, release guest memory, remove our socket file (server mode)."""
        with contextlib.suppress(OSError):
            os.eventfd_write(self._stop_fd, 1)
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._reset()
        if self._listener is not None:
            self._listener.close()
            unixsock.unlink_if_ours(self.path, self._inode)
        self.epoll.close()
        os.close(self._stop_fd)

    # -- protocol ------------------------------------------------------------------------------

    def _handle(self, conn: socket.socket, msg: Message) -> None:
        req = msg.request
        handler = _HANDLERS.get(req)
        if handler is None:
            log.warning("%s: unsupported request %d ignored", self.name, req)
            if msg.need_reply:
                send_reply(conn, req, u64(1))
            return
        try:
            reply = handler(self, msg)
        except (MemoryError_, RingError, ValueError, struct.error) as e:
            self.errors += 1
            self.last_error = f"{d.REQUEST_NAMES.get(req, req)}: {e}"
            log.error("%s: %s refused: %s", self.name, d.REQUEST_NAMES.get(req, req), e)
            if req in d.REPLYING:
                raise ProtocolError(self.last_error) from None
            if msg.need_reply:
                send_reply(conn, req, u64(1))
            return
        if reply is not None:
            send_reply(conn, req, reply)
        elif msg.need_reply and d.has(self.protocol_features, d.PROTOCOL_F_REPLY_ACK):
            send_reply(conn, req, u64(0))

    def _queue(self, index: int) -> QueueConfig:
        if not 0 <= index < NUM_QUEUES:
            raise ValueError(f"queue {index} does not exist (one queue pair)")
        return self._queues[index]

    def _vring_state(self, msg: Message) -> tuple[QueueConfig, int, int]:
        index, num = struct.unpack_from("<II", msg.payload)
        return self._queue(index), index, num

    def _get_features(self, msg: Message) -> bytes:
        return u64(self.offered)

    def _set_features(self, msg: Message) -> None:
        features = msg.u64()
        if features & ~self.offered:
            raise ValueError(f"features {features & ~self.offered:#x} were not offered")
        with self.lock:
            self.features = features
            self._restart_all()

    def _get_protocol_features(self, msg: Message) -> bytes:
        return u64(PROTOCOL_FEATURES)

    def _set_protocol_features(self, msg: Message) -> None:
        self.protocol_features = msg.u64() & PROTOCOL_FEATURES

    def _get_queue_num(self, msg: Message) -> bytes:
        return u64(1)

    def _nothing(self, msg: Message) -> None:
        return None

    def _reset_owner(self, msg: Message) -> None:
        self._reset()

    def _set_mem_table(self, msg: Message) -> None:
        nregions, _ = struct.unpack_from("<II", msg.payload)
        if not 1 <= nregions <= d.MAX_REGIONS:
            raise ValueError(f"{nregions} memory regions (1 to {d.MAX_REGIONS} allowed)")
        regions = [Region(*struct.unpack_from("<QQQQ", msg.payload, 8 + 32 * i)) for i in range(nregions)]
        if len(msg.fds) != nregions:
            raise ValueError(f"{nregions} memory regions but {len(msg.fds)} file descriptors")
        mem = GuestMemory(regions, msg.fds)  # maps; the descriptors can be closed afterwards
        with self.lock:
            for i in range(NUM_QUEUES):
                self._park(i)
            old, self._mem = self._mem, mem
            if old is not None:
                old.close()
            self._restart_all()

    def _set_vring_num(self, msg: Message) -> None:
        q, index, num = self._vring_state(msg)
        if not 0 < num <= d.MAX_QUEUE_SIZE or num & (num - 1):
            raise ValueError(f"queue {index}: size {num} is not a power of two up to {d.MAX_QUEUE_SIZE}")
        with self.lock:
            self._park(index)
            q.num = num
            self._start(index)

    def _set_vring_addr(self, msg: Message) -> None:
        index, _flags, desc, used, avail, _log = struct.unpack_from("<IIQQQQ", msg.payload)
        q = self._queue(index)
        with self.lock:
            self._park(index)
            q.desc, q.used, q.avail, q.addr_set = desc, used, avail, True
            self._start(index)

    def _set_vring_base(self, msg: Message) -> None:
        q, index, num = self._vring_state(msg)
        with self.lock:
            self._park(index)
            q.base = num & 0xFFFF
            self._start(index)

    def _get_vring_base(self, msg: Message) -> bytes:
        q, index, _ = self._vring_state(msg)
        with self.lock:
            self._park(index)
            q.kick_set = False  # stopped until the next SET_VRING_KICK
            if q.kick_fd is not None:
                self._kick_fd(index, None)
            base = q.base
        return struct.pack("<II", index, base)

    def _fd_for(self, msg: Message) -> tuple[QueueConfig, int, int | None]:
        value = msg.u64()
        index = value & d.VRING_IDX_MASK
        q = self._queue(index)
        fd = None if value & d.VRING_NOFD_MASK else msg.take_fd()
        if fd is None and not value & d.VRING_NOFD_MASK:
            raise ValueError(f"queue {index}: no file descriptor passed")
        return q, index, fd

    def _set_vring_kick(self, msg: Message) -> None:
        q, index, fd = self._fd_for(msg)
        with self.lock:
            self._park(index)
            self._kick_fd(index, fd)
            q.kick_set = True
            self._start(index)

    def _kick_fd(self, index: int, fd: int | None) -> None:
        q = self._queues[index]
        if q.kick_fd is not None:
            if index == TX_QUEUE:
                with contextlib.suppress(OSError, ValueError):
                    self.epoll.unregister(q.kick_fd)
            os.close(q.kick_fd)
        q.kick_fd = fd
        if fd is not None and index == TX_QUEUE:
            self.epoll.register(fd, select.EPOLLIN)

    def _set_vring_call(self, msg: Message) -> None:
        q, index, fd = self._fd_for(msg)
        with self.lock:
            if q.call_fd is not None:
                os.close(q.call_fd)
            q.call_fd = fd
            ring = self._rings[index]
            if ring is not None:
                ring.call_fd = fd

    def _set_vring_err(self, msg: Message) -> None:
        q, _, fd = self._fd_for(msg)
        if q.err_fd is not None:
            os.close(q.err_fd)
        q.err_fd = fd

    def _set_vring_enable(self, msg: Message) -> None:
        q, index, num = self._vring_state(msg)
        with self.lock:
            self._park(index)
            q.enabled = bool(num)
            self._start(index)

    def _reset_device(self, msg: Message) -> None:
        self._reset()

    # -- ring state (lock held) ----------------------------------------------------------------

    def _park(self, index: int) -> None:
        """Stop a running ring, remembering where it was."""
        ring = self._rings[index]
        if ring is not None:
            self._queues[index].base = ring.last_avail
            self._rings[index] = None

    def _restart_all(self) -> None:
        for i in range(NUM_QUEUES):
            self._park(i)
            self._start(i)

    def _start(self, index: int) -> None:
        """Run the ring if the front-end has told us all it needs."""
        q, mem = self._queues[index], self._mem
        enabled = q.enabled or not d.has(self.features, d.USER_F_PROTOCOL_FEATURES)
        if mem is None or not q.num or not q.addr_set or not q.kick_set or not enabled:
            return
        dsz, asz, usz = ring_bytes(q.num)
        try:
            offs = [
                mem.offset_of(mem.uaddr_to_gpa(a, n), n)
                for a, n in ((q.desc, dsz), (q.avail, asz), (q.used, usz))
            ]
        except MemoryError_ as e:
            self.errors += 1
            self.last_error = f"queue {index}: {e}"
            log.error("%s: queue %d not started: %s", self.name, index, e)
            return
        ring = DeviceRing(
            mem,
            q.num,
            *offs,
            q.base,
            d.net_hdr_len(self.features),
            d.has(self.features, d.RING_F_EVENT_IDX),
            q.call_fd,
            read_vnet=index == TX_QUEUE and d.has(self.features, d.NET_F_CSUM),
        )
        ring.kick_fd = q.kick_fd
        if index == RX_QUEUE:
            ring.want_kicks(False)  # we never wait for receive buffers: no kicks needed
        self._rings[index] = ring

    def _reset(self) -> None:
        """Forget the front-end: rings, memory, features (disconnect, RESET_OWNER/DEVICE)."""
        with self.lock:
            for i in range(NUM_QUEUES):
                self._rings[i] = None
                q = self._queues[i]
                if q.kick_fd is not None:
                    self._kick_fd(i, None)
                q.close_fds()
                self._queues[i] = QueueConfig()
            if self._mem is not None:
                self._mem.close()
                self._mem = None
            self.features = 0
            self.protocol_features = 0

    def info(self) -> dict[str, object]:
        return {
            "socket": self.path,
            "mode": "client" if self.client else "server",
            "connected": self.connected,
            "running": self.running,
            "errors": self.errors,
            **({"peer": self.peer} if self.peer else {}),
        }


_HANDLERS = {
    d.GET_FEATURES: VhostDevice._get_features,
    d.SET_FEATURES: VhostDevice._set_features,
    d.SET_OWNER: VhostDevice._nothing,
    d.RESET_OWNER: VhostDevice._reset_owner,
    d.SET_MEM_TABLE: VhostDevice._set_mem_table,
    d.SET_VRING_NUM: VhostDevice._set_vring_num,
    d.SET_VRING_ADDR: VhostDevice._set_vring_addr,
    d.SET_VRING_BASE: VhostDevice._set_vring_base,
    d.GET_VRING_BASE: VhostDevice._get_vring_base,
    d.SET_VRING_KICK: VhostDevice._set_vring_kick,
    d.SET_VRING_CALL: VhostDevice._set_vring_call,
    d.SET_VRING_ERR: VhostDevice._set_vring_err,
    d.GET_PROTOCOL_FEATURES: VhostDevice._get_protocol_features,
    d.SET_PROTOCOL_FEATURES: VhostDevice._set_protocol_features,
    d.GET_QUEUE_NUM: VhostDevice._get_queue_num,
    d.SET_VRING_ENABLE: VhostDevice._set_vring_enable,
    d.SEND_RARP: VhostDevice._nothing,
    d.NET_SET_MTU: VhostDevice._nothing,
    d.RESET_DEVICE: VhostDevice._reset_device,
}
