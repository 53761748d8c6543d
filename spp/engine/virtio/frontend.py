"""Our own virtio-net driver in userspace (the role of DPDK's ``net_virtio_user``).

:class:`VirtioUser` plays the guest: it allocates its "guest memory" as one memfd shared with
the back-end, lays out two split virtqueues and their packet slots in it, negotiates over the
vhost-user socket (as client, connecting to a back-end such as ``vhost:N`` or testpmd's
``net_vhost``; or as server, waiting for a back-end in client mode), and then moves bursts:
``tx_burst`` copies pool buffers into free transmit slots and publishes them with one store of
the avail index, ``rx_burst`` copies what the back-end wrote into pool buffers and gives the
slots straight back. Each descriptor owns a fixed 2 KiB slot, so both directions are one fancy
index per burst. Guest-physical addresses are our own virtual addresses, as DPDK's driver does.

Offloads are negotiated (checksums and TCP/UDP aggregates both ways): each packet's virtio-net
header carries its buffer's offload metadata. A frame longer than a slot (an aggregate, a jumbo
frame) is sent from one of a few *large* transmit slots, its descriptor pointed there until the
back-end returns it; long frames arrive as merged receive buffers and are joined into a large
pool buffer.

*Zero-copy* (given a pool whose memory can be shared, see :func:`pool_region`): the pool's packet
rows are shared with the back-end as a second memory region, and each descriptor is a header slot
of ours chained to a pool buffer. Transmit posts the burst's buffers themselves and frees them
when the back-end returns them; receive posts pool buffers, hands the used ones on and posts fresh
ones. Otherwise the slots above are used and every frame is copied.

A control thread owns the socket: it performs the handshake, then watches for the back-end going
away; in client mode it reconnects, in server mode it accepts the next back-end. Ring state is
rebuilt under the data lock, so the worker sees a consistent device between bursts.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import mmap
import os
import select
import socket
import stat
import struct
import threading

import numpy as np

from spp.engine import offload
from spp.engine.linux import ETH_HLEN
from spp.engine.pool import BufferPool
from spp.engine.ports.base import NOTHING, SOME
from spp.engine.shm import VNET_HDR_LEN
from spp.engine.virtio import defs as d
from spp.engine.virtio import unixsock
from spp.engine.virtio.defs import need_event
from spp.engine.virtio.memory import RowViews, SharedArea
from spp.engine.virtio.message import (
    PeerGone,
    ProtocolError,
    recv_message,
    send_message,
    u64,
)
from spp.engine.virtio.ring import EMPTY, SplitLayout, ring_bytes, ring_read, ring_write

log = logging.getLogger(__name__)

RX_SLOT = 2048  # bytes per receive buffer (header + frame; larger frames come merged)
#: where a transmit slot's frame starts (its header just before): a cache line's boundary, so a
#: 64-byte frame is one line for us to write and the back-end to read, not two; the header's
#: line, zero unless a frame has offload metadata, is not written per packet at all
TX_FRAME_AT = 64
TX_SLOT = TX_FRAME_AT + 2048  # a transmit slot holds the header and the largest pool buffer
LARGE_TX_SLOT = 68 * 1024  # a header and a 64 KiB aggregate with its headers
LARGE_TX_SLOTS = 16
#: transmit descriptors :meth:`VirtioUser.transmit_one` takes back itself, one by one (more: the
#: burst path's vector gather)
FEW_USED = 4
HDR_SLOT = 64  # zero-copy: a slot holds only a packet's header (the frame is in a pool buffer)
NONE = np.uint32(0xFFFFFFFF)  # no pool buffer behind a descriptor
RECONNECT_SECONDS = 0.5
#: default virtqueue size when copying through slots. A burst costs mostly a fixed number of
#: array operations, so the worker moves bursts of up to 1024 packets; the ring holds four such
#: bursts so that the two sides work at once: the back-end copies one burst while the driver
#: fills the next (with a ring of one burst they take turns, bench/RESULTS.md).
QUEUE_SIZE = 4096
#: zero-copy: every receive descriptor holds a pool buffer all the time, so the ring stays at
#: a burst's size rather than tie up a quarter of a default pool
ZC_QUEUE_SIZE = 1024
_ARANGE = np.arange(1 << 16, dtype=np.int64)

WANTED_FEATURES = (
    d.NET_OFFLOADS
    | 1 << d.F_VERSION_1
    | 1 << d.NET_F_MRG_RXBUF
    | 1 << d.F_ANY_LAYOUT
    | 1 << d.USER_F_PROTOCOL_FEATURES
    | 1 << d.RING_F_EVENT_IDX
)
WANTED_PROTOCOL = 1 << d.PROTOCOL_F_REPLY_ACK


class VirtioError(Exception):
    """The driver cannot be set up (the message says why)."""


def _align(n: int, a: int = 4096) -> int:
    return -(-n // a) * a


_or = np.bitwise_or.reduce
_max = np.maximum.reduce


def _metadata(pool: BufferPool, bufs: np.ndarray) -> np.ndarray:
    """The virtio-net headers of ``bufs`` as ``VNET_HDR_LEN``-byte elements: their metadata, or
    zeros for a frame with nothing to do (whose other fields may be stale)."""
    rows = pool.vnet[bufs]
    rows[pool.vnet_word[bufs] == 0] = 0
    return rows.view(np.dtype((np.void, VNET_HDR_LEN))).reshape(-1)


def pool_region(pool: BufferPool) -> tuple[int, int, int] | None:
    """``(fd, file offset, length)`` of the pool's packet rows, to share with a back-end, or
    None where zero-copy cannot apply: rows not page-aligned in the file, or a file of huge
    pages (their 2 MiB alignment cannot be made to follow our 4 KiB-aligned rings in
    guest-physical space without a hole). The back-end then sees every packet buffer of the
    pool (as DPDK's back-end sees a virtio-user application's whole mempool), not only ours."""
    seg = pool.seg
    off = getattr(seg, "buf_data_offset", None)
    if off is None or off % mmap.PAGESIZE:
        return None
    try:
        st = os.fstat(seg.fd)
    except OSError:
        return None
    if st.st_blksize > mmap.PAGESIZE or not stat.S_ISREG(st.st_mode):
        return None
    length = -(-seg.nb_rows * seg.spec.buf_size // mmap.PAGESIZE) * mmap.PAGESIZE
    if st.st_size < off + length:
        return None
    return seg.fd, off, length


def _runs(mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """``(start, end, value)`` of each run of equal values of a boolean array."""
    edges = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    bounds = [0, *edges.tolist(), len(mask)]
    return [(a, b, bool(mask[a])) for a, b in itertools.pairwise(bounds)]


class DriverQueue:
    """One virtqueue from the driver's side: its ring views and its slots.

    ``paired``: a ring of ``2 x size`` descriptors, where descriptor ``i`` (the header, in slot
    ``i``) chains to descriptor ``size + i`` (the frame, in a pool buffer: zero-copy). Only the
    ``size`` heads are ever made available, so ids and the free list are the same either way.
    """

    def __init__(
        self, area: SharedArea, ring_off: int, slot_off: int, size: int, slot: int, paired: bool = False
    ) -> None:
        self.size = size
        self.paired = paired
        ring_size = 2 * size if paired else size
        self.mask = ring_size - 1
        dsz, asz, _ = ring_bytes(ring_size)
        self.desc_off, self.avail_off = ring_off, ring_off + dsz
        self.used_off = _align(ring_off + dsz + asz, 4)
        self.ring = SplitLayout(area.flat, ring_size, self.desc_off, self.avail_off, self.used_off)
        # the frame descriptors of a paired ring, indexed by their head's id
        self.data_addr = self.ring.desc_addr[size:]
        self.data_len = self.ring.desc_len[size:]
        self.slot = slot
        self.slots = area.flat[slot_off : slot_off + size * slot].reshape(size, slot)
        self.rows = RowViews(self.slots)
        self.slots_mv = memoryview(self.slots.reshape(-1))  # (Python ints: a lone packet's path)
        # num_buffers of each slot's header, as one strided uint16 array
        self.num_buffers = np.ndarray((size,), "<u2", buffer=self.slots, offset=10, strides=(slot,))
        # and flags | gso_type << 8, zero for a packet without offload metadata
        self.hdr_word = np.ndarray((size,), "<u2", buffer=self.slots, offset=0, strides=(slot,))
        self.slot_addr = area.addr + slot_off + _ARANGE[:size] * slot
        self.kick_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.call_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.reset()

    def reset(self, hdr_len: int = d.NET_HDR_LEN, device_writes: bool = False) -> None:
        r = self.ring
        n = self.size
        #: where in its slot a descriptor starts (the header; the frame follows it)
        self.hdr_off = 0 if self.paired or device_writes else TX_FRAME_AT - hdr_len
        self.desc_addr = (self.slot_addr + self.hdr_off).astype(np.uint64)
        r.desc["addr"][:n] = self.desc_addr
        r.desc["addr"][n:] = 0
        r.desc["len"] = 0
        r.desc["flags"] = 0
        r.desc["next"] = 0
        if self.paired:
            write = d.VRING_DESC_F_WRITE if device_writes else 0
            r.desc["len"][:n] = hdr_len
            r.desc["flags"][:n] = d.VRING_DESC_F_NEXT | write
            r.desc["next"][:n] = _ARANGE[n : 2 * n]
            r.desc["flags"][n:] = write
        r.avail_flags[0] = 0
        r.avail_idx[0] = 0
        r.used_flags[0] = 0
        r.used_idx[0] = 0
        r.used_event[0] = 0
        r.avail_event[0] = 0
        self.avail_idx = 0
        self.last_used = 0
        # Transmit headers stay zero unless a packet has offload metadata, so they are written
        # once here rather than per packet; the back-end only reads transmit slots.
        self.slots[:, self.hdr_off : self.hdr_off + d.NET_HDR_LEN] = 0
        self.free_ids = np.arange(self.size, dtype=np.int64)[::-1].copy()
        self.free_mv = memoryview(self.free_ids)  # (Python ints: a lone packet's path)
        self.nfree = self.size
        self.lent = np.zeros(self.size, bool)  # zero-copy: descriptors the back-end holds
        self.nlent = 0

    def lend(self, ids: np.ndarray) -> None:
        """Zero-copy: ``ids`` (and the pool buffers behind them) go to the back-end."""
        self.lent[ids] = True
        self.nlent += len(ids)

    def take_back(self, ids: np.ndarray) -> None:
        """Zero-copy: check that the back-end returns only descriptors it holds, each once, as
        a pool buffer handed on or freed twice would corrupt the pool every process shares."""
        if not self.lent[ids].all():
            raise ProtocolError("used descriptor that was not made available")
        self.lent[ids] = False
        left = int(np.count_nonzero(self.lent))
        if left != self.nlent - len(ids):
            raise ProtocolError("used descriptor returned twice")
        self.nlent = left

    #: VIRTIO_RING_F_EVENT_IDX negotiated: notifications go by the event indexes, not the flags
    event_idx = False

    def publish(self, ids: np.ndarray) -> int:
        """Make ``ids`` available; returns the avail index before, for :meth:`kick`."""
        r = self.ring
        old = self.avail_idx
        ring_write(r.avail_ring, self.avail_idx, ids)
        self.avail_idx = (self.avail_idx + len(ids)) & 0xFFFF
        r.avail_idx[0] = self.avail_idx
        return old

    def publish_one(self, i: int) -> int:
        """:meth:`publish` for one id as a Python int (a lone packet's path)."""
        r = self.ring
        old = self.avail_idx
        r.avail_mv[2 + (old & self.mask)] = i
        self.avail_idx = (old + 1) & 0xFFFF
        r.avail_mv[1] = self.avail_idx
        return old

    def used_one(self) -> tuple[int, int, int]:
        """``(entries waiting, first one's id, its length)`` with Python ints, nothing consumed;
        the id is -1 when none waits, or when it is out of the ring (the burst path refuses it
        and says why)."""
        r = self.ring
        n = (r.used_mv[1] - self.last_used) & 0xFFFF
        if not n:
            return 0, -1, 0
        elem = r.used64_mv[self.last_used & self.mask]
        i = elem & 0xFFFFFFFF
        return n, (i if i < self.size else -1), elem >> 32

    def _used_count(self, limit: int) -> int:
        n = (int(self.ring.used_idx[0]) - self.last_used) & 0xFFFF
        if n > self.size:
            raise ProtocolError(f"used index {n} entries ahead on a ring of {self.size}")
        return min(n, limit)

    def used_ids(self, limit: int) -> np.ndarray:
        """Descriptors the back-end has finished with (intp, checked), up to ``limit``."""
        n = self._used_count(limit)
        if not n:
            return EMPTY
        ids = ring_read(self.ring.used_ids, self.last_used, n).astype(np.intp)
        if int(_max(ids)) >= self.size:
            raise ProtocolError(f"used id {int(ids.max())} out of a ring of {self.size}")
        self.last_used = (self.last_used + n) & 0xFFFF
        return ids

    def used(self, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`used_ids`, with the lengths the back-end wrote (uint32)."""
        n = self._used_count(limit)
        if not n:
            return EMPTY, EMPTY
        ids = self.used_ids(n)
        return ids, ring_read(self.ring.used_lens, (self.last_used - n) & 0xFFFF, n)

    def kick(self, old: int) -> None:
        """Notify the back-end of what was published since avail index ``old``, if it asked."""
        used = self.ring.used_mv  # (Python ints: cheaper than two numpy scalar reads)
        if self.event_idx:
            if not need_event(used[2 + 4 * (self.mask + 1)], self.avail_idx, old):  # avail_event
                return
        elif used[0] & d.VRING_USED_F_NO_NOTIFY:
            return
        with contextlib.suppress(OSError):
            os.eventfd_write(self.kick_fd, 1)

    def close(self) -> None:
        os.close(self.kick_fd)
        os.close(self.call_fd)


class VirtioUser:
    """A virtio-net device driven from this process over the vhost-user socket ``path``."""

    def __init__(
        self,
        path: str,
        server: bool = False,
        queue_size: int | None = None,
        name: str = "",
        event_idx: bool = True,
        offloads: bool = True,
        pool: BufferPool | None = None,
    ) -> None:
        """``event_idx=False`` declines VIRTIO_RING_F_EVENT_IDX (notifications by flags only),
        ``offloads=False`` every offload (a driver that wants plain frames both ways).

        ``pool``: the packet pool the caller's bursts come from. If its memory can be shared
        (see :func:`pool_region`), the driver runs *zero-copy*: the pool's buffers are shared
        with the back-end and posted as they are, rather than copied through slots of our own.
        ``queue_size``: both virtqueues' size, :data:`QUEUE_SIZE` (zero-copy
        :data:`ZC_QUEUE_SIZE`) unless given.
        """
        region = pool_region(pool) if pool is not None else None
        if queue_size is None:
            queue_size = QUEUE_SIZE if region is None else ZC_QUEUE_SIZE
        if queue_size & (queue_size - 1) or not 0 < queue_size <= 4096:
            raise VirtioError(f"queue size {queue_size} is not a power of two up to 4096")
        self.path = path
        self.server = server
        self.name = name or path
        self.size = queue_size
        self.wanted = WANTED_FEATURES if event_idx else WANTED_FEATURES & ~(1 << d.RING_F_EVENT_IDX)
        if not offloads:
            self.wanted &= ~d.NET_OFFLOADS
        self.zc = region is not None
        rx_slot, tx_slot = (HDR_SLOT, HDR_SLOT) if self.zc else (RX_SLOT, TX_SLOT)
        ring_len = _align(sum(ring_bytes(2 * queue_size if self.zc else queue_size)) + 8)
        rx_len = queue_size * rx_slot
        large_off = 2 * ring_len + rx_len + queue_size * tx_slot
        nb_large = 0 if self.zc else LARGE_TX_SLOTS
        self.area = SharedArea(large_off + nb_large * LARGE_TX_SLOT, "spp-virtio-user")
        self.rxq = DriverQueue(self.area, 0, 2 * ring_len, queue_size, rx_slot, self.zc)
        self.txq = DriverQueue(self.area, ring_len, 2 * ring_len + rx_len, queue_size, tx_slot, self.zc)
        if pool is not None and region is not None:
            # The pool's rows follow our own memory in guest-physical space, so the back-end
            # sees one stretch without a hole (one bounds check per burst); each row's address
            # is precomputed, so posting a burst of buffers is one gather.
            self._pool_fd, self._pool_file_off, self._pool_len = region
            self._pool_uaddr = pool.seg.buf_data_addr
            self._pool_gpa = self.area.addr + self.area.size
            self._gpa_of = self._pool_gpa + np.arange(pool.seg.nb_rows, dtype=np.uint64) * pool.buf_size
            self._buf_size = pool.buf_size
            # a handle of the control thread's own, to post receive buffers and take them back
            self._ctl_pool: BufferPool | None = BufferPool(pool.seg)
            self.held_rx = np.full(queue_size, NONE, np.uint32)  # the pool buffer behind each
            self.held_tx = np.full(queue_size, NONE, np.uint32)
        else:
            self._ctl_pool = None
        # Large transmit slots (pages only touched when used): free ones, and which descriptor
        # holds which (-1: its own slot).
        self.large_off = large_off
        self.large_free = list(range(LARGE_TX_SLOTS))
        self.large_of = np.full(queue_size, -1, np.int64)
        self._hdr_dirty = np.zeros(queue_size, bool)  # transmit slots whose header is not zero
        self.lock = threading.Lock()
        self.running = False
        self.connected = False
        self.features = 0
        self.hdr_len = d.NET_HDR_LEN
        self.send_caps = 0  # offloads the back-end takes from us (offload.CAN_*)
        self.read_vnet = False  # the back-end may send us offload metadata (GUEST_CSUM)
        self.errors = 0
        self.connections = 0
        self.last_error = ""
        #: pool buffers kept out of the pool for good: a back-end that broke the rings and then
        #: did not confirm it had stopped may still write into them
        self.quarantined = 0
        self.rx_interrupts = True
        self._stop_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._drop_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # the worker: drop it
        self._shared = False  # the back-end has been given our memory table on this connection
        self._conn: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        if server:
            self._listener, self._inode = unixsock.listen(path, VirtioError)
        self._thread = threading.Thread(target=self._serve, name=f"virtio-user {self.name}", daemon=True)
        self._thread.start()

    # -- the packet path -----------------------------------------------------------------------

    def tx_burst(self, pool: BufferPool, bufs: np.ndarray) -> int:
        """Send a prefix of ``bufs`` as they are (the caller made them fit :attr:`send_caps`
        and :data:`LARGE_TX_SLOT`); returns how many were taken (and freed)."""
        with self.lock:
            if not self.running or not len(bufs):
                return 0
            try:
                k = self._tx(pool, bufs)
            except Exception as e:  # whatever the back-end wrote, the worker carries on
                self._failed(e)
                return 0
        if k and not self.zc:  # (zero-copy: they are freed when the back-end is done)
            pool.free(bufs[:k])
        return k

    def send(self, pool: BufferPool, bufs: np.ndarray, xstats: np.ndarray) -> tuple[np.ndarray, int]:
        """Send a prefix of ``bufs`` made fit for the back-end first: ``(sent, taken)``, where
        ``sent`` is the burst after :func:`offload.prepare` (the caller owns ``bufs`` as long as
        ``sent is bufs``; otherwise it owns ``sent``) less frames too long for any slot (freed,
        counted as ``tx_refused``), and ``taken`` how many of it the back-end took (and freed)."""
        with self.lock:  # (held while preparing, so the features cannot change in between)
            if not self.running or not len(bufs):
                return bufs, 0
            # One gather of the metadata words tells both whether there is anything to prepare
            # and whether the headers need writing: a plain burst skips both.
            meta: bool | None = bool(_or(pool.vnet_word[bufs]))
            sent = bufs
            if meta:
                sent = offload.prepare(pool, bufs, xstats, self.send_caps)
                meta = None  # (prepare may have finished some: look again when writing)
            # Only a large buffer can hold a long frame: one reduction of the indices spares the
            # length gather on ordinary bursts.
            top = int(_max(sent)) if len(sent) else 0
            if top >= pool.large_base:
                long = pool.lengths[sent] > LARGE_TX_SLOT - self.hdr_len
                if long.any():
                    xstats[offload.XS["tx_refused"]] += int(np.count_nonzero(long))
                    if sent is bufs:
                        sent = sent.copy()  # the caller must see a burst of its own now
                    pool.free(sent[long])
                    sent = sent[~long]
                    top = int(_max(sent)) if len(sent) else 0
            try:
                k = self._tx(pool, sent, meta, top)
            except Exception as e:  # whatever the back-end wrote, the worker carries on
                self._failed(e)
                return sent, 0
        if k and not self.zc:  # (zero-copy: they are freed when the back-end is done)
            pool.free(sent[:k])
        return sent, k

    def _tx(
        self, pool: BufferPool, bufs: np.ndarray, meta: bool | None = None, top: int | None = None
    ) -> int:
        """``meta``: whether any of ``bufs`` has offload metadata (None: not known yet);
        ``top``: their largest index (None: not known yet)."""
        if self.zc:
            return self._tx_zc(pool, bufs, meta)
        q = self.txq
        done = q.used_ids(q.size)
        if len(done):
            if len(self.large_free) < LARGE_TX_SLOTS:
                self._reclaim_large(done)
            q.free_ids[q.nfree : q.nfree + len(done)] = done
            q.nfree += len(done)
        if not len(bufs):
            return 0
        if top is None:
            top = int(_max(bufs))
        if top < pool.large_base:
            return self._tx_slots(pool, bufs, meta)
        long = pool.lengths[bufs] > pool.buf_size
        if not long.any():
            return self._tx_slots(pool, bufs, meta)
        sent = 0
        for run_start, run_end, is_long in _runs(long):
            if is_long:
                for b in bufs[run_start:run_end].tolist():
                    if not self._tx_large(pool, b):
                        return sent
                    sent += 1
            else:
                k = self._tx_slots(pool, bufs[run_start:run_end], meta)
                sent += k
                if k < run_end - run_start:
                    return sent
        return sent

    def _tx_slots(self, pool: BufferPool, bufs: np.ndarray, meta: bool | None = None) -> int:
        """Pool-buffer-sized frames, each in its descriptor's own slot, in one go."""
        q = self.txq
        k = min(len(bufs), q.nfree)
        if not k:
            return 0
        q.nfree -= k
        ids = q.free_ids[q.nfree : q.nfree + k]  # a view: nothing is pushed back before we return
        src = bufs[:k].astype(np.intp)  # (a uint32 index array is converted on every use)
        lens = pool.lengths[src]
        h = self.hdr_len
        width = int(_max(lens))  # a pool buffer always fits a slot after the header
        if self.send_caps:
            self._tx_headers(pool, ids, src, meta)
        if width:
            q.rows(width, q.hdr_off + h)[ids] = self._pool_rows(pool)(width)[src]
        q.ring.desc_len[ids] = lens + h  # flags and next stay 0
        q.kick(q.publish(ids))
        return k

    def _tx_zc(self, pool: BufferPool, bufs: np.ndarray, meta: bool | None = None) -> int:
        """Zero-copy: each buffer itself goes out as the frame descriptor behind its header
        (large ones too: a large buffer is contiguous), and is kept until the back-end returns
        its descriptor, then freed."""
        q = self.txq
        done = q.used_ids(q.size)
        if len(done):
            q.take_back(done)
            pool.free(self.held_tx[done])
            q.free_ids[q.nfree : q.nfree + len(done)] = done
            q.nfree += len(done)
        k = min(len(bufs), q.nfree)
        if not k:
            return 0
        q.nfree -= k
        ids = q.free_ids[q.nfree : q.nfree + k]  # a view: nothing is pushed back before we return
        taken = bufs[:k]
        if self.send_caps:
            self._tx_headers(pool, ids, taken, meta)
        q.data_addr[ids] = self._gpa_of[taken]
        q.data_len[ids] = pool.lengths[taken]
        self.held_tx[ids] = taken
        q.lend(ids)
        q.kick(q.publish(ids))
        return k

    def _tx_headers(self, pool: BufferPool, ids: np.ndarray, src: np.ndarray, meta: bool | None) -> None:
        """Write the offload metadata of ``src`` into the headers of slots ``ids`` (``meta``:
        whether any has some, None: look). Headers are zero unless written here, so a slot that
        carried metadata is marked, and zeroed again when it next carries a frame without; while
        none is marked, a plain burst costs nothing here."""
        q = self.txq
        if meta is None:
            meta = bool(_or(pool.vnet_word[src]))
        if meta:
            q.rows(VNET_HDR_LEN, q.hdr_off)[ids] = _metadata(pool, src)
            self._hdr_dirty[ids] = True
            self._ndirty = int(np.count_nonzero(self._hdr_dirty))
        elif self._ndirty and self._hdr_dirty[ids].any():
            q.rows(VNET_HDR_LEN, q.hdr_off)[ids] = self._zero_vnet
            self._hdr_dirty[ids] = False
            self._ndirty = int(np.count_nonzero(self._hdr_dirty))

    #: how many transmit slots have a header that is not zero
    _ndirty = 0

    _zero_vnet = np.zeros(1, np.dtype((np.void, VNET_HDR_LEN)))[0]

    def _tx_large(self, pool: BufferPool, buf: int) -> bool:
        """One long frame from a large slot; False when no descriptor or large slot is free."""
        q = self.txq
        if not q.nfree or not self.large_free:
            return False
        q.nfree -= 1
        i = int(q.free_ids[q.nfree])
        slot = self.large_free.pop()
        h = self.hdr_len
        ln = int(pool.lengths[buf])
        off = self.large_off + slot * LARGE_TX_SLOT
        flat = self.area.flat
        flat[off : off + h] = 0
        if self.send_caps and pool.vnet_word[buf]:
            flat[off : off + VNET_HDR_LEN] = pool.vnet[buf]
        flat[off + h : off + h + ln] = pool.frame(buf, ln)
        self.large_of[i] = slot
        q.ring.desc["addr"][i] = self.area.addr + off
        q.ring.desc64[i, 1] = ln + h
        q.kick(q.publish(np.array([i], np.uint16)))
        return True

    def _reclaim_large(self, ids: np.ndarray) -> None:
        """Descriptors back from the back-end give their large slots back (and get their own)."""
        slots = self.large_of[ids]
        used = slots >= 0
        if used.any():
            back = ids[used]
            self.large_free.extend(slots[used].tolist())
            self.large_of[back] = -1
            self.txq.ring.desc["addr"][back] = self.txq.desc_addr[back]

    # -- one packet: an idle panel's path ------------------------------------------------------

    def receive_one(self, pool: BufferPool) -> int:
        """A lone packet from the back-end in a pool buffer, with Python ints only: what
        :meth:`Port.rx_one` answers; its offload metadata is the port's to check. Copying
        driver only; merged buffers, long frames and anything the burst path must refuse are
        left to it (SOME)."""
        with self.lock:
            if not self.running:
                return NOTHING
            if self.zc:
                return SOME
            q = self.rxq
            n, i, length = q.used_one()
            if n != 1 or i < 0:
                return NOTHING if not n else SOME
            h = self.hdr_len
            at = i * q.slot
            slots = q.slots_mv
            if h >= 12 and slots[at + 10] | slots[at + 11] << 8 != 1:  # num_buffers
                return SOME
            ln = length - h
            if not ETH_HLEN <= ln <= min(RX_SLOT - h, pool.buf_size):
                return SOME
            b = pool.alloc_one()
            if b < 0:
                return SOME  # the burst path finds the pool empty too, and leaves the packet
            o, v = b * pool.buf_size, b * VNET_HDR_LEN
            pool.data_mv[o : o + ln] = slots[at + h : at + h + ln]
            if self.read_vnet:
                pool.vnet_mv[v : v + VNET_HDR_LEN] = slots[at : at + VNET_HDR_LEN]
            else:
                pool.vnet_mv[v : v + 2] = b"\0\0"
            pool.len_mv[b] = ln
            q.last_used = (q.last_used + 1) & 0xFFFF
            q.kick(q.publish_one(i))  # the slot goes straight back to the back-end
            return b

    def transmit_one(self, pool: BufferPool, buf: int) -> int:
        """Send a lone plain packet with Python ints only: 1 (taken, and freed), 0 (not
        connected, or no descriptor free: the caller drops it), or -1 for :meth:`send` to deal
        with (metadata, a large buffer, zero-copy, many descriptors to take back first)."""
        v = buf * VNET_HDR_LEN
        if pool.vnet_mv[v] or pool.vnet_mv[v + 1] or buf >= pool.large_base:
            return -1
        with self.lock:
            if not self.running:
                return 0
            if self.zc or self._ndirty:
                return -1
            q = self.txq
            n, _, _ = q.used_one()
            if n:
                if n > FEW_USED or len(self.large_free) < LARGE_TX_SLOTS:
                    return -1
                used, free, last = q.ring.used64_mv, q.free_mv, q.last_used
                ids = [used[(last + j) & q.mask] & 0xFFFFFFFF for j in range(n)]
                if max(ids) >= q.size:
                    return -1
                for j in ids:
                    free[q.nfree] = j
                    q.nfree += 1
                q.last_used = (last + n) & 0xFFFF
            if not q.nfree:
                return 0
            q.nfree -= 1
            i = q.free_mv[q.nfree]
            h, ln = self.hdr_len, pool.len_mv[buf]
            at = i * q.slot + q.hdr_off + h
            o = buf * pool.buf_size
            q.slots_mv[at : at + ln] = pool.data_mv[o : o + ln]
            q.ring.desc_mv[2 * i + 1] = ln + h  # flags and next stay 0
            q.kick(q.publish_one(i))
        pool.free_one(buf)
        return 1

    def rx_burst(self, pool: BufferPool, max_n: int) -> np.ndarray:
        with self.lock:
            if not self.running:
                return EMPTY
            try:
                return self._rx(pool, max_n)
            except Exception as e:  # whatever the back-end wrote, the worker carries on
                self._failed(e)
                return EMPTY

    def _failed(self, e: Exception) -> None:
        """The back-end corrupted the rings (lock held): stop posting, and have the control
        thread drop the connection (after stopping the back-end's rings, :meth:`_stop_rings`)
        and start afresh on a new one."""
        self.errors += 1
        self.last_error = str(e)
        log.error("%s: stopping: %s", self.name, e)
        self.running = False
        with contextlib.suppress(OSError):
            os.eventfd_write(self._drop_fd, 1)

    def _pool_rows(self, pool: BufferPool) -> RowViews:
        views = self._pool_views
        if views is None or views.rows is not pool.data:
            views = self._pool_views = RowViews(pool.data)
        return views

    _pool_views: RowViews | None = None

    def _pool_vnet(self, pool: BufferPool) -> np.ndarray:
        views = self._vnet_views
        if views is None or views.rows is not pool.vnet:
            views = self._vnet_views = RowViews(pool.vnet)
        return views(VNET_HDR_LEN)

    _vnet_views: RowViews | None = None

    def _rx(self, pool: BufferPool, max_n: int) -> np.ndarray:
        q = self.rxq
        ids, lens = q.used(max_n)
        if not len(ids):
            if self.zc and q.nlent < self.size:
                self._top_up(pool)
            return EMPTY
        if self.rx_interrupts:
            self.rx_interrupts = False  # busy: we will look again anyway
            if not q.event_idx:  # (with event indexes, a used event left behind does the same)
                q.ring.avail_flags[0] = d.VRING_AVAIL_F_NO_INTERRUPT
        h = self.hdr_len
        self.meta_seen = self.read_vnet
        room = h + self._buf_size if self.zc else RX_SLOT  # what one receive chain holds
        if h >= 12:
            nbufs = q.num_buffers[ids]
            if (nbufs != 1).any():
                if int(lens.max()) > room:
                    raise ProtocolError(f"used length beyond the {room}-byte receive buffers")
                return self._rx_merged(pool, ids, lens.astype(np.int64), nbufs)
        frame_lens = lens - np.uint32(h)  # unsigned: a length below the header's wraps, and fails
        longest = int(_max(frame_lens))
        if longest > room - h:
            raise ProtocolError(
                f"used length shorter than the virtio-net header or beyond the {room}-byte receive buffers"
            )
        # Only the headers' first two bytes are looked at first: for plain traffic that spares
        # copying every 10-byte header, and the port's check of the metadata.
        self.meta_seen = self.read_vnet and bool(_or(q.hdr_word[ids]))
        if self.zc:
            return self._rx_zc(pool, ids, frame_lens)
        bufs = pool.alloc(len(ids), plain=not self.meta_seen)
        if len(bufs) < len(ids):  # pool exhausted: leave them in the ring for the next call
            pool.free(bufs)
            q.last_used = (q.last_used - len(ids)) & 0xFFFF
            return EMPTY
        got = bufs.astype(np.intp)
        if longest:
            self._pool_rows(pool)(longest)[got] = q.rows(longest, h)[ids]
        if self.meta_seen:
            self._pool_vnet(pool)[got] = q.rows(VNET_HDR_LEN)[ids]
        pool.lengths[got] = frame_lens
        q.kick(q.publish(ids))  # the slots go straight back to the back-end
        return bufs

    def _top_up(self, pool: BufferPool) -> None:
        """Zero-copy: post pool buffers behind the receive descriptors that have none (the
        pool could not give them all at the handshake)."""
        q = self.rxq
        ids = np.flatnonzero(~q.lent)
        fresh = pool.alloc(len(ids))
        if not len(fresh):
            return
        ids = ids[: len(fresh)]
        self.held_rx[ids] = fresh
        q.data_addr[ids] = self._gpa_of[fresh]
        q.lend(ids)
        q.kick(q.publish(ids))

    def _rx_zc(self, pool: BufferPool, ids: np.ndarray, frame_lens: np.ndarray) -> np.ndarray:
        """Zero-copy: the back-end wrote the frames into the pool buffers behind ``ids``; they
        are handed on as they are, and fresh buffers take their place on the ring."""
        q = self.rxq
        fresh = pool.alloc(len(ids))  # metadata cleared: still so when they come back
        if len(fresh) < len(ids):  # pool exhausted: leave them in the ring for the next call
            pool.free(fresh)
            q.last_used = (q.last_used - len(ids)) & 0xFFFF
            return EMPTY
        try:
            q.take_back(ids)
        except ProtocolError:
            pool.free(fresh)
            raise
        bufs = self.held_rx[ids]
        self.held_rx[ids] = fresh
        q.data_addr[ids] = self._gpa_of[fresh]
        if self.meta_seen:
            self._pool_vnet(pool)[bufs] = q.rows(VNET_HDR_LEN)[ids]
        pool.lengths[bufs] = frame_lens
        q.lend(ids)
        q.kick(q.publish(ids))
        if q.nlent < self.size:
            self._top_up(pool)
        return bufs

    def _rx_bytes(self, pool: BufferPool, i: int, length: int, first: bool) -> list[np.ndarray]:
        """What the back-end wrote into receive descriptor ``i``: ``length`` bytes, less the
        header in the first buffer of a packet."""
        q, h = self.rxq, self.hdr_len
        if not self.zc:
            return [q.slots[i, h if first else 0 : length]]
        # zero-copy: the chain is the header slot, then the pool buffer
        rest = pool.frame(int(self.held_rx[i]), max(length - h, 0))
        return [rest] if first else [q.slots[i, : min(h, length)], rest]

    def _rx_merged(
        self, pool: BufferPool, ids: np.ndarray, lens: np.ndarray, nbufs: np.ndarray
    ) -> np.ndarray:
        """Packets spread over several receive buffers (mergeable rx): joined one by one, into
        large pool buffers where they are longer than a pool buffer. A packet whose last buffers
        have not arrived yet, or that finds no buffer free, is put back by rewinding the used
        index."""
        q = self.rxq
        out: list[int] = []
        i, consumed = 0, 0
        limit = pool.large_size if pool.seg.spec.nb_large else pool.buf_size
        while i < len(ids):
            k = int(nbufs[i])
            if k < 1 or i + k > len(ids):
                if k >= 1 and i + k <= q.size:
                    break  # the rest of this packet is not there yet
                raise ProtocolError(f"num_buffers {k} in a receive buffer")
            parts = self._rx_bytes(pool, int(ids[i]), int(lens[i]), True)
            for j in range(i + 1, i + k):
                parts += self._rx_bytes(pool, int(ids[j]), int(lens[j]), False)
            frame = np.concatenate(parts)
            if len(frame) > limit:
                self.rx_too_long += 1  # nothing can hold it: its buffers go back
            else:
                got = pool.alloc_large(1) if len(frame) > pool.buf_size else pool.alloc(1)
                if not len(got):
                    break  # no buffer now: the packet waits in the ring
                b = int(got[0])
                pool.frame(b, len(frame))[:] = frame
                pool.lengths[b] = len(frame)
                if self.read_vnet:
                    pool.vnet[b] = q.slots[ids[i], :VNET_HDR_LEN]
                else:
                    pool.vnet_word[b] = 0
                out.append(b)
            i += k
            consumed = i
        q.last_used = (q.last_used - (len(ids) - consumed)) & 0xFFFF
        q.kick(q.publish(ids[:consumed]))
        return np.array(out, np.uint32)

    #: packets that arrived longer than the largest pool buffer, dropped
    rx_too_long = 0
    #: the last receive burst may carry offload metadata (to be checked)
    meta_seen = False

    def prepare_sleep(self) -> bool:
        """Going idle: ask for interrupts (call eventfd), drain it, and say whether packets
        arrived meanwhile."""
        with self.lock:
            return self.running and self._rearm()

    def _rearm(self) -> bool:
        q = self.rxq
        if q.event_idx:
            q.ring.used_event[0] = q.last_used  # signal the next used entry
        elif not self.rx_interrupts:
            q.ring.avail_flags[0] = 0
        self.rx_interrupts = True
        with contextlib.suppress(OSError):
            os.eventfd_read(q.call_fd)
        return int(q.ring.used_idx[0]) != q.last_used

    def fileno(self) -> int:
        """Readable when the back-end signals received packets."""
        return self.rxq.call_fd

    # -- connection ----------------------------------------------------------------------------

    def _connect(self) -> socket.socket | None:
        if self._listener is not None:
            if not unixsock.wait_readable(self._listener.fileno(), self._stop_fd, None):
                return None
            try:
                return self._listener.accept()[0]
            except OSError:
                return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            if e.errno not in (errno.ENOENT, errno.ECONNREFUSED):
                self.last_error = f"connect {self.path}: {e.strerror}"
            unixsock.wait_readable(self._stop_fd, self._stop_fd, RECONNECT_SECONDS)
            return None
        return sock

    def _serve(self) -> None:
        while not unixsock.is_signalled(self._stop_fd):
            conn = self._connect()
            if conn is None:
                continue
            self._conn = conn
            self._shared = False
            stopped = True  # the back-end can no longer touch the pool buffers we lent it
            try:
                self._handshake(conn)
                self.connected = True
                self.connections += 1
                log.info("%s: connected, features %#x", self.name, self.features)
                if self._wait(conn):
                    msg = recv_message(conn)  # the back-end sends nothing unasked: EOF or garbage
                    msg.close_fds()
                    raise ProtocolError(f"unexpected message {msg.request} from the back-end")
                stopped = self._stop_rings(conn)  # we are closing, or the worker gave up on it
            except PeerGone:
                log.info("%s: back-end went away", self.name)
            except (ProtocolError, OSError, struct.error) as e:
                self.errors += 1
                self.last_error = str(e)
                log.error("%s: connection dropped: %s", self.name, e)
                stopped = self._stop_rings(conn)
            finally:
                with self.lock:
                    self.running = False
                    if stopped:
                        self._release()
                    else:
                        self._quarantine()
                self.connected = False
                self._conn = None
                conn.close()
            if self._listener is None:
                unixsock.wait_readable(self._stop_fd, self._stop_fd, RECONNECT_SECONDS)

    def _wait(self, conn: socket.socket) -> bool:
        """Wait on the connection: True when the back-end sent something (it sends nothing
        unasked), False when we close or the worker found the rings broken."""
        p = select.poll()
        for fd in (conn.fileno(), self._stop_fd, self._drop_fd):
            p.register(fd, select.POLLIN)
        fds = {fd for fd, _ in p.poll()}
        if self._drop_fd in fds:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._drop_fd)
        return fds == {conn.fileno()}

    def _stop_rings(self, conn: socket.socket) -> bool:
        """Zero-copy, leaving a back-end that may still be there (we close, it broke the rings
        or the protocol): stop both rings, so that no write of the back-end can land in a pool
        buffer after we gave it back. GET_VRING_BASE answers once the back-end has stopped
        using a ring. Returns whether the pool buffers lent to it are safe to take back: both
        rings stopped, the peer gone, or our memory never shared with it. A back-end that is
        there but does not answer in time is dropped all the same, and the buffers with it."""
        if not self.zc or not self._shared:
            return True
        with self.lock:
            self.running = False  # the worker posts nothing more
        try:
            conn.settimeout(2)
            for index in (0, 1):
                self._call(conn, d.GET_VRING_BASE, struct.pack("<II", index, 0))
        except (PeerGone, BrokenPipeError, ConnectionResetError):
            return True  # its end is closed: so is its use of our memory
        except (ProtocolError, OSError, struct.error) as e:  # TimeoutError included
            log.error("%s: the back-end did not confirm it stopped its rings: %s", self.name, e)
            return False
        return True

    def _quarantine(self) -> None:
        """Zero-copy (lock held): the pool buffers lent to a back-end that may still write into
        them are forgotten rather than reused, and counted (``quarantined`` in the port's info):
        a few lost buffers are better than another packet's bytes overwritten."""
        if self._ctl_pool is None:
            return
        n = len(self._take_held())
        if n:
            self.quarantined += n
            log.error("%s: %d pool buffers lent to the back-end are kept out of the pool", self.name, n)

    def _release(self) -> None:
        """Zero-copy (lock held, rings stopped): the pool buffers behind our descriptors, the
        receive buffers posted and the transmitted ones not yet returned, go back to the pool."""
        if self._ctl_pool is None:
            return
        self._ctl_pool.free(self._take_held())  # (large ones too: an aggregate in flight)
        self._ctl_pool.flush()

    def _take_held(self) -> np.ndarray:
        """Zero-copy (lock held): the pool buffers behind our descriptors (receive buffers
        posted, transmitted ones not yet returned), which the driver then no longer holds."""
        held = np.concatenate((self.held_rx, self.held_tx[self.txq.lent]))
        self.held_rx[:] = NONE
        self.held_tx[:] = NONE
        return held[held != NONE]

    def _call(
        self,
        conn: socket.socket,
        request: int,
        payload: bytes = b"",
        fds: list[int] | None = None,
        ack: bool = False,
    ) -> bytes | None:
        want_ack = ack and d.has(self._protocol, d.PROTOCOL_F_REPLY_ACK)
        send_message(conn, request, payload, fds, flags=d.FLAG_NEED_REPLY if want_ack else 0)
        if request in d.REPLYING or want_ack:
            reply = recv_message(conn)
            reply.close_fds()
            if reply.request != request or not reply.flags & d.FLAG_REPLY:
                raise ProtocolError(f"reply to {request} was request {reply.request}")
            if want_ack and request not in d.REPLYING and reply.u64() != 0:
                raise ProtocolError(f"back-end refused {d.REQUEST_NAMES.get(request, request)}")
            return reply.payload
        return None

    _protocol = 0

    def _handshake(self, conn: socket.socket) -> None:
        self._protocol = 0
        self._call(conn, d.SET_OWNER)
        offered = struct.unpack("<Q", self._call(conn, d.GET_FEATURES) or b"")[0]
        features = offered & self.wanted
        if d.has(features, d.USER_F_PROTOCOL_FEATURES):
            proto = struct.unpack("<Q", self._call(conn, d.GET_PROTOCOL_FEATURES) or b"")[0]
            self._call(conn, d.SET_PROTOCOL_FEATURES, u64(proto & WANTED_PROTOCOL))
            self._protocol = proto & WANTED_PROTOCOL
        self._call(conn, d.SET_FEATURES, u64(features), ack=True)
        with self.lock:
            self.features = features
            self.send_caps = d.device_rx_caps(features)
            self.read_vnet = d.has(features, d.NET_F_GUEST_CSUM)
            self.large_free = list(range(LARGE_TX_SLOTS))
            self.large_of[:] = -1
            self._hdr_dirty[:] = False  # (reset zeroes the headers)
            self._ndirty = 0
            self.hdr_len = d.net_hdr_len(features)
            self._release()  # (done when the last connection ended; this is a safety net)
            self.rxq.reset(self.hdr_len, device_writes=True)
            self.txq.reset(self.hdr_len)
            for q in (self.rxq, self.txq):
                q.event_idx = d.has(features, d.RING_F_EVENT_IDX)
            # Every receive slot (zero-copy: a pool buffer behind each) is offered to the
            # back-end at once.
            if self._ctl_pool is not None:
                fresh = self._ctl_pool.alloc(self.size)
                self._ctl_pool.flush()  # (what the bulk take left in this handle's cache)
                posted = len(fresh)  # fewer only from an exhausted pool
                self.held_rx[:posted] = fresh
                self.rxq.data_addr[:posted] = self._gpa_of[fresh]
                self.rxq.data_len[:] = self._buf_size
                self.rxq.lend(_ARANGE[:posted])
            else:
                posted = self.size
                self.rxq.ring.desc["len"] = RX_SLOT
                self.rxq.ring.desc["flags"] = d.VRING_DESC_F_WRITE
            self.rxq.publish(_ARANGE[:posted].astype(np.uint16))
            self.rx_interrupts = True
        a = self.area
        regions = [(a.addr, a.size, a.addr, 0)]
        fds = [a.fd]
        if self.zc:  # the pool's rows right after our own memory, guest-physically
            regions.append((self._pool_gpa, self._pool_len, self._pool_uaddr, self._pool_file_off))
            fds.append(self._pool_fd)
        table = struct.pack("<II", len(regions), 0) + b"".join(struct.pack("<QQQQ", *r) for r in regions)
        self._shared = True  # (from the send on: the back-end may map it before any reply)
        self._call(conn, d.SET_MEM_TABLE, table, fds, ack=True)
        for index, q in enumerate((self.rxq, self.txq)):
            self._call(conn, d.SET_VRING_NUM, struct.pack("<II", index, q.ring.size), ack=True)
            self._call(conn, d.SET_VRING_BASE, struct.pack("<II", index, 0), ack=True)
            addrs = struct.pack(
                "<IIQQQQ",
                index,
                0,
                a.addr + q.desc_off,
                a.addr + q.used_off,
                a.addr + q.avail_off,
                0,
            )
            self._call(conn, d.SET_VRING_ADDR, addrs, ack=True)
            self._call(conn, d.SET_VRING_CALL, u64(index), [q.call_fd], ack=True)
            self._call(conn, d.SET_VRING_KICK, u64(index), [q.kick_fd], ack=True)
        if d.has(features, d.USER_F_PROTOCOL_FEATURES):
            for index in (0, 1):
                self._call(conn, d.SET_VRING_ENABLE, struct.pack("<II", index, 1), ack=True)
        with self.lock:
            self.running = True
        self.rxq.kick(0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.eventfd_write(self._stop_fd, 1)
        if self.zc:  # the control thread stops the rings first (see _stop_rings)
            self._thread.join(3)
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        with self.lock:
            self.running = False
            self._release()
        if self._listener is not None:
            self._listener.close()
            unixsock.unlink_if_ours(self.path, self._inode)
        self.rxq.close()
        self.txq.close()
        os.close(self._stop_fd)
        os.close(self._drop_fd)
        if self._ctl_pool is not None:
            self._ctl_pool.close()
        self.area.close()

    def info(self) -> dict[str, object]:
        return {
            "socket": self.path,
            "mode": "server" if self.server else "client",
            "connected": self.connected,
            "running": self.running,
            "errors": self.errors,
            "quarantined": self.quarantined,
        }
