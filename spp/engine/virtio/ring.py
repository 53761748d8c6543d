"""Split virtqueues (virtio 1.x §2.7) as numpy views over shared memory, a burst at a time.

The device side (:class:`DeviceRing`) serves the vhost back-end: ``receive`` takes what the
driver made available on its transmit queue, ``deliver`` fills the buffers it made available on
its receive queue. Both read the avail ring slice, gather the descriptors, validate every index
and address with array operations, and copy all payloads of the common layouts (one descriptor
per packet, or a header descriptor followed by one data descriptor) with a single fancy index of
the memory window; only unusual layouts (long chains, packets spanning several merged buffers)
take a per-packet path. Anything inconsistent raises :class:`RingError` before memory is touched.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from spp.engine.linux import ETH_HLEN
from spp.engine.pool import BufferPool
from spp.engine.ports.base import NOTHING, SOME
from spp.engine.shm import VNET_HDR_LEN
from spp.engine.virtio.defs import (
    DESC,
    USED_ELEM,
    VRING_AVAIL_F_NO_INTERRUPT,
    VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
    VRING_USED_F_NO_NOTIFY,
    need_event,
)
from spp.engine.virtio.memory import GuestMemory, MemoryError_, RowViews

EMPTY = np.empty(0, np.uint32)
_LEN_FLAGS = np.uint64((1 << 48) - 1)  # a descriptor's len and flags, without next
_WRITE_ONLY_INT = VRING_DESC_F_WRITE << 32
_MASK64 = (1 << 64) - 1
_or = np.bitwise_or.reduce
_max = np.maximum.reduce
_VNET_VOID = np.dtype((np.void, VNET_HDR_LEN))


def _metadata(pool: BufferPool, bufs: np.ndarray) -> np.ndarray:
    """The virtio-net headers (first ``VNET_HDR_LEN`` bytes) of ``bufs``, one row each: their
    metadata, or zeros for a frame with nothing to do (whose other fields may be stale)."""
    rows = pool.vnet[bufs]
    rows[pool.vnet_word[bufs] == 0] = 0
    return rows


def ring_read(arr: np.ndarray, start: int, n: int) -> np.ndarray:
    """``n`` entries of a ring array from free-running index ``start`` (a slice unless it wraps)."""
    size = len(arr)
    s = start & (size - 1)
    if s + n <= size:
        return arr[s : s + n]
    return np.concatenate((arr[s:], arr[: n - (size - s)]))


def ring_write(arr: np.ndarray, start: int, values: np.ndarray) -> None:
    size, n = len(arr), len(values)
    s = start & (size - 1)
    if s + n <= size:
        arr[s : s + n] = values
    else:
        k = size - s
        arr[s:] = values[:k]
        arr[: n - k] = values[k:]


_WIDTH_STEP = 64  # payload copy widths are rounded up to this, so few memory windows are built
DELIVERED, NO_BUFFERS, TOO_LARGE = range(3)


class RingError(Exception):
    """The driver put something impossible on the ring; the ring stops until it is set up anew."""


class SplitLayout:
    """Views of one split ring's three parts."""

    def __init__(self, mem_flat: np.ndarray, size: int, desc: int, avail: int, used: int) -> None:
        self.size = size
        self.mask = size - 1
        self.desc = mem_flat[desc : desc + 16 * size].view(DESC)
        avail16 = mem_flat[avail : avail + 6 + 2 * size].view(np.uint16)
        self.avail_flags = avail16[0:1]
        self.avail_idx = avail16[1:2]
        self.avail_ring = avail16[2 : 2 + size]
        self.used_event = avail16[2 + size : 3 + size]
        used16 = mem_flat[used : used + 4].view(np.uint16)
        self.used_flags = used16[0:1]
        self.used_idx = used16[1:2]
        self.used_ring = mem_flat[used + 4 : used + 4 + 8 * size].view(USED_ELEM)
        self.used_ids = self.used_ring["id"]
        # The same memory as whole 64-bit words: one gather reads a descriptor's address and its
        # len|flags|next word, one store writes a used element (id | len << 32).
        self.desc64 = mem_flat[desc : desc + 16 * size].view(np.uint64).reshape(size, 2)
        self.used64 = mem_flat[used + 4 : used + 4 + 8 * size].view(np.uint64)
        self.used_lens = self.used_ring["len"]
        # One column of the table each: a 1-D gather of a column is several times cheaper than
        # a 2-D gather of whole rows.
        self.desc_addr = self.desc64[:, 0]
        self.desc_word = self.desc64[:, 1]  # len | flags << 32 | next << 48
        self.desc_len = self.desc["len"]
        self.avail_event = mem_flat[used + 4 + 8 * size : used + 6 + 8 * size].view(np.uint16)
        # The same again as memoryviews (Python ints): for a lone packet, and for the few fields
        # every burst reads or writes once, where a numpy scalar access costs more.
        #: avail ring as u16: flags, idx, ring[size], used_event
        self.avail_mv = memoryview(mem_flat[avail : avail + 6 + 2 * size]).cast("H")
        #: used ring as u16: flags, idx, elements (4 each), avail_event; its elements as u64
        #: (id | len << 32)
        self.used_mv = memoryview(mem_flat[used : used + 6 + 8 * size]).cast("H")
        self.used64_mv = memoryview(mem_flat[used + 4 : used + 4 + 8 * size]).cast("Q")
        #: descriptor table as u64 pairs: addr, len | flags << 32 | next << 48
        self.desc_mv = memoryview(mem_flat[desc : desc + 16 * size]).cast("Q")


def ring_bytes(size: int) -> tuple[int, int, int]:
    """Sizes of the descriptor table, avail ring and used ring (each with its event field)."""
    return 16 * size, 6 + 2 * size, 6 + 8 * size


class DeviceRing:
    """The device's view of one virtqueue: where it is in the rings, and how to signal."""

    def __init__(
        self,
        mem: GuestMemory,
        size: int,
        desc: int,
        avail: int,
        used: int,
        base: int,
        hdr_len: int,
        event_idx: bool,
        call_fd: int | None,
        read_vnet: bool = False,
    ) -> None:
        """``read_vnet``: the driver may send offload metadata (VIRTIO_NET_F_CSUM negotiated), so
        each packet's header is copied into its buffer's ``vnet``; otherwise buffers get none."""
        self.mem = mem
        self.read_vnet = read_vnet
        self.ring = SplitLayout(mem.flat, size, desc, avail, used)
        self.size = size
        self.last_avail = base & 0xFFFF
        self.used_idx = base & 0xFFFF
        self.hdr_len = hdr_len
        self.event_idx = event_idx
        self.call_fd = call_fd
        self.kick_fd: int | None = None
        self.notify_on = True  # the driver's kicks are wanted (we are about to sleep)
        self.hdr_template = np.zeros(hdr_len, np.uint8)
        if hdr_len >= 12:
            self.hdr_template[10] = 1  # num_buffers = 1
        self.hdr_void = self.hdr_template.view(np.dtype((np.void, hdr_len)))[0]
        self.hdr_bytes = self.hdr_template.tobytes()
        self._pool_rows: RowViews | None = None
        self._pool_vnet: RowViews | None = None

    def _rows(self, pool: BufferPool) -> RowViews:
        views = self._pool_rows
        if views is None or views.rows is not pool.data:
            views = self._pool_rows = RowViews(pool.data)
        return views

    def _vnet(self, pool: BufferPool) -> np.ndarray:
        """Every buffer's offload metadata as one ``VNET_HDR_LEN``-byte element."""
        views = self._pool_vnet
        if views is None or views.rows is not pool.vnet:
            views = self._pool_vnet = RowViews(pool.vnet)
        return views(VNET_HDR_LEN)

    # -- shared steps --------------------------------------------------------------------------

    def _available(self, limit: int) -> tuple[int, np.ndarray]:
        r = self.ring
        n = (int(r.avail_idx[0]) - self.last_avail) & 0xFFFF
        if n > self.size:
            raise RingError(f"avail index is {n} entries ahead on a ring of {self.size}")
        n = min(n, limit)
        if not n:
            return 0, EMPTY
        heads = ring_read(r.avail_ring, self.last_avail, n)
        if int(_max(heads)) >= self.size:
            raise RingError(f"descriptor index {int(heads.max())} out of a ring of {self.size}")
        return n, heads

    def _complete(self, heads: np.ndarray, lens: np.ndarray | int) -> None:
        r = self.ring
        n = len(heads)
        if isinstance(lens, int) and not lens:
            ring_write(r.used64, self.used_idx, heads)  # id, and len 0, in one store per entry
        else:
            ring_write(r.used_ids, self.used_idx, heads)
            ring_write(r.used_lens, self.used_idx, lens)
        old = self.used_idx
        self.used_idx = (old + n) & 0xFFFF
        r.used_idx[0] = self.used_idx  # after the entries (stores are ordered on x86-64)
        self.last_avail = (self.last_avail + n) & 0xFFFF
        self._signal(old)

    def _complete_one(self, head: int, length: int) -> None:
        """:meth:`_complete` for one descriptor chain, with Python ints only."""
        r = self.ring
        old = self.used_idx
        r.used64_mv[old & r.mask] = head | length << 32
        self.used_idx = (old + 1) & 0xFFFF
        r.used_mv[1] = self.used_idx  # after the entry (stores are ordered on x86-64)
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        self._signal(old)

    def _signal(self, old: int) -> None:
        if self.call_fd is None:
            return
        avail = self.ring.avail_mv
        if self.event_idx:
            if not need_event(avail[2 + self.size], self.used_idx, old):  # used_event
                return
        elif avail[0] & VRING_AVAIL_F_NO_INTERRUPT:
            return
        with contextlib.suppress(OSError):
            os.eventfd_write(self.call_fd, 1)

    def _chain(self, head: int, writable: bool) -> list[tuple[int, int]]:
        """The (arena offset, length) segments of one descriptor chain, validated."""
        desc = self.ring.desc
        segs: list[tuple[int, int]] = []
        i = head
        for _ in range(self.size):
            d = desc[i]
            flags = int(d["flags"])
            if flags & VRING_DESC_F_INDIRECT:
                raise RingError("indirect descriptor (not negotiated)")
            if bool(flags & VRING_DESC_F_WRITE) != writable:
                raise RingError(f"descriptor {i} is {'not ' if writable else ''}device-writable")
            length = int(d["len"])
            if length:
                try:
                    segs.append((self.mem.offset_of(int(d["addr"]), length), length))
                except MemoryError_ as e:
                    raise RingError(str(e)) from None
            if not flags & VRING_DESC_F_NEXT:
                return segs
            i = int(d["next"])
            if i >= self.size:
                raise RingError(f"next descriptor {i} out of a ring of {self.size}")
        raise RingError(f"descriptor chain from {head} loops")

    # -- the driver's transmit queue -> our receive --------------------------------------------

    def receive(self, pool: BufferPool, limit: int) -> tuple[np.ndarray, int]:
        """Take up to ``limit`` packets; returns (buffers, packets dropped as unusable)."""
        n, heads = self._available(limit)
        if not n:
            return EMPTY, 0
        self.meta_seen = True
        if self.mem.single is not None:
            if self._chained(heads):
                simple = self._receive_pair(pool, heads)
            else:
                simple = self._receive_simple(pool, heads)
            if simple is not None:
                return simple, 0
        bufs = pool.alloc(n, plain=not self.read_vnet)  # (read_vnet: every kept one is written)
        if len(bufs) < n:  # pool exhausted: leave the rest on the ring for later
            n = len(bufs)
            heads = heads[:n]
            if not n:
                return EMPTY, 0
        d = self.ring.desc[heads]
        addr = d["addr"].copy()
        ln = d["len"].astype(np.int64)
        flags = d["flags"]
        h = self.hdr_len
        hdr_off, hdr_in = self.mem.offsets(addr, h)
        addr += np.uint64(h)
        ln -= h
        slow = (flags & (VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE)) != 0
        chained = (flags & VRING_DESC_F_NEXT) != 0
        if chained.any():
            # A header alone in the first descriptor and the frame in the next: virtio's legacy
            # layout, still used by drivers that do not prepend the header.
            nxt = d["next"][chained].astype(np.int64)
            if int(nxt.max()) >= self.size:
                raise RingError(f"next descriptor {int(nxt.max())} out of a ring of {self.size}")
            d2 = self.ring.desc[nxt]
            two = (ln[chained] == 0) & (
                (d2["flags"] & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE)) == 0
            )
            ci = np.flatnonzero(chained)
            addr[ci[two]] = d2["addr"][two]
            ln[ci[two]] = d2["len"][two]
            slow[ci[~two]] = True
        buf_size = pool.buf_size
        bad = (ln < 0) | (ln > buf_size)
        off, inside = self.mem.offsets(addr, np.maximum(ln, 0))
        fast = ~slow & ~bad & inside & hdr_in
        width = 0
        if fast.any():
            width = min(-(-int(ln[fast].max()) // _WIDTH_STEP) * _WIDTH_STEP, buf_size)
            fast &= off + width <= self.mem.region_end(off)  # a full-width read must stay mapped
        lens = ln
        dropped = 0
        fi = np.flatnonzero(fast)
        if len(fi):
            pool.data[bufs[fi], :width] = self.mem.window(width)[off[fi]]
            if self.read_vnet:
                self._vnet(pool)[bufs[fi]] = self.mem.void_window(VNET_HDR_LEN)[hdr_off[fi]]
        if len(fi) < n:
            ok = fast.copy()
            n = self._receive_each(pool, heads, bufs, lens, ok)
            if n < len(heads):  # a long frame waits for a large buffer; so does what follows it
                pool.free(bufs[n:])
                heads, bufs, lens, ok = heads[:n], bufs[:n], lens[:n], ok[:n]
                if not n:
                    return EMPTY, 0
            dropped = int(n - ok.sum())
        self._complete(heads, 0)
        if dropped:
            pool.free(bufs[~ok])
            bufs, lens = bufs[ok], lens[ok]
        pool.lengths[bufs] = lens
        return bufs, dropped

    #: packets dropped because they were longer than any buffer (or no large buffer exists)
    rx_too_long = 0

    # -- one packet: an idle panel's path ------------------------------------------------------

    def _next_avail(self) -> tuple[int, int]:
        """How many chains are available, and the first one's head (-1 if none, or if its index
        is out of the ring: the burst path refuses it and says why)."""
        r = self.ring
        avail = r.avail_mv
        n = (avail[1] - self.last_avail) & 0xFFFF
        if not n:
            return 0, -1
        head = avail[2 + (self.last_avail & r.mask)]
        return n, (head if head < self.size else -1)

    def _lone_layout(self, head: int, write: int) -> tuple[int, int, int] | None:
        """``(header address, frame address, room)`` of the chain at ``head`` when it has one of
        the two common layouts (one descriptor, header and frame; or a header's descriptor and
        a frame's), every descriptor's flags ``write`` (and NEXT between them); None for any
        other (the burst path deals with it, and says what is wrong)."""
        d, h = self.ring.desc_mv, self.hdr_len
        addr, word = d[2 * head], d[2 * head + 1]
        flags, ln = word >> 32 & 0xFFFF, word & 0xFFFFFFFF
        if flags == write:
            return (addr, addr + h, ln - h) if ln >= h else None
        if flags != write | VRING_DESC_F_NEXT or ln != h:
            return None
        nxt = word >> 48
        if nxt >= self.size:
            return None
        word = d[2 * nxt + 1]
        if word >> 32 & 0xFFFF != write:
            return None
        return addr, d[2 * nxt], word & 0xFFFFFFFF

    def receive_one(self, pool: BufferPool) -> int:
        """A lone packet from the driver, in a pool buffer, with Python ints only: what
        :meth:`Port.rx_one` answers (the buffer, NOTHING or SOME). Its header's offload metadata
        is the caller's to check. Several packets, other layouts, runts and long frames are left
        to :meth:`receive` (SOME), with nothing consumed."""
        n, head = self._next_avail()
        if n != 1 or head < 0:
            return NOTHING if not n else SOME
        layout = self._lone_layout(head, 0)
        if layout is None:
            return SOME
        hdr_at, frm_at, ln = layout
        if not ETH_HLEN <= ln <= pool.buf_size:
            return SOME
        mem = self.mem
        src, hsrc = mem.offset_one(frm_at, ln), mem.offset_one(hdr_at, VNET_HDR_LEN)
        if src < 0 or hsrc < 0:
            return SOME
        b = pool.alloc_one()
        if b < 0:
            return SOME  # the burst path finds the pool empty too, and leaves the packet
        o, v = b * pool.buf_size, b * VNET_HDR_LEN
        pool.data_mv[o : o + ln] = mem.mv[src : src + ln]
        if self.read_vnet:
            pool.vnet_mv[v : v + VNET_HDR_LEN] = mem.mv[hsrc : hsrc + VNET_HDR_LEN]
        else:
            pool.vnet_mv[v : v + 2] = b"\0\0"
        pool.len_mv[b] = ln
        self._complete_one(head, 0)
        return b

    def deliver_one(self, pool: BufferPool, buf: int) -> int:
        """Write a lone plain packet into the driver's next receive buffer with Python ints only:
        1 (taken and freed), 0 (no receive buffer available: the caller drops it), or -1 for
        :meth:`deliver` to deal with (metadata to write, a large buffer, an unusual layout)."""
        v = buf * VNET_HDR_LEN
        if pool.vnet_mv[v] or pool.vnet_mv[v + 1] or buf >= pool.large_base:
            return -1
        n, head = self._next_avail()
        if not n:
            return 0
        if head < 0 or n > self.size:
            return -1
        layout = self._lone_layout(head, VRING_DESC_F_WRITE)
        ln, h = pool.len_mv[buf], self.hdr_len
        if layout is None or layout[2] < ln:
            return -1
        mem = self.mem
        to, hto = mem.offset_one(layout[1], ln), mem.offset_one(layout[0], h)
        if to < 0 or hto < 0:
            return -1
        o = buf * pool.buf_size
        mem.mv[hto : hto + h] = self.hdr_bytes
        mem.mv[to : to + ln] = pool.data_mv[o : o + ln]
        self._complete_one(head, ln + h)
        pool.free_one(buf)
        return 1

    def _receive_each(
        self, pool: BufferPool, heads: np.ndarray, bufs: np.ndarray, lens: np.ndarray, ok: np.ndarray
    ) -> int:
        """The per-packet path for the packets not marked ``ok`` (chains, long frames): each is
        gathered and copied, into a large buffer (swapped into ``bufs``) when longer than a pool
        buffer. Returns how many packets were dealt with: all, unless a long frame found no large
        buffer free (then it and those behind it stay on the ring)."""
        buf_size, h = pool.buf_size, self.hdr_len
        has_large = pool.seg.spec.nb_large > 0
        limit = pool.large_size if has_large else buf_size
        for i in np.flatnonzero(~ok).tolist():
            try:
                whole = self._gather(int(heads[i]), limit)
            except RingError as e:
                self.broken = str(e)  # stop after this burst; the driver gets its buffers back
                whole = None
            if whole is None:
                continue
            if isinstance(whole, int):  # too long for any buffer
                self.rx_too_long += 1
                continue
            frame = whole[h:]
            b = int(bufs[i])
            if len(frame) > buf_size:
                large = pool.alloc_large(1)
                if not len(large):
                    return i
                pool.free(bufs[i : i + 1])
                bufs[i] = b = int(large[0])
            pool.frame(b, len(frame))[:] = frame
            if self.read_vnet:
                pool.vnet[b] = whole[:VNET_HDR_LEN]
            lens[i] = len(frame)
            ok[i] = True
        return len(heads)

    #: why the ring must stop, set by a burst that met an impossible descriptor
    broken: str | None = None

    def _receive_simple(self, pool: BufferPool, heads: np.ndarray) -> np.ndarray | None:
        """The common burst, in about fifteen array operations: every packet one descriptor
        holding header and frame, all inside the (single) memory region. Returns the buffers,
        or None to take the general path (nothing has been written or consumed)."""
        r = self.ring
        at = heads.astype(np.intp)
        # len and flags of every descriptor as one unsigned number, less the header: flags not
        # zero, or a length shorter than the header (which wraps), make it huge, so one maximum
        # checks all three.
        ln = (r.desc_word[at] & _LEN_FLAGS) - np.uint64(self.hdr_len)
        longest = int(_max(ln))
        if longest > pool.buf_size:
            return None
        width = -(-longest // _WIDTH_STEP) * _WIDTH_STEP
        h = self.hdr_len
        # The headers' offsets from the region's start, unsigned: an address below it wraps to
        # a huge value, so one maximum checks both ends of header and frame. Each frame lies
        # ``h`` bytes further, so the copy reads from a window ``h`` bytes on, not new offsets.
        start = self.mem.single[0]  # type: ignore[index]
        at_hdr = self._in_region(at, h + width)
        if at_hdr is None:
            return None
        hdr = self._headers_with_metadata(at_hdr, start) if self.read_vnet else None
        return self._land(pool, heads, at_hdr, ln, hdr, start + h, width)

    #: the last burst may carry offload metadata (False: a fast path saw every header empty, so
    #: the buffers' metadata is cleared and needs no check)
    meta_seen = True

    def _headers_with_metadata(self, hdr: np.ndarray, base: int) -> np.ndarray | None:
        """The arena offsets of a burst's headers (``hdr``, from ``base``) if any header has
        offload metadata, else None. Only each header's first two bytes (flags, gso_type) are
        gathered: for plain traffic that is much cheaper than copying every 10-byte header."""
        self.meta_seen = bool(_or(self.mem.word_window()[base:][hdr]))
        return hdr + base if self.meta_seen else None

    def _in_region(self, at: np.ndarray, room: int) -> np.ndarray | None:
        """Descriptors ``at``'s buffer addresses as offsets from the one-region table's start
        (int64), or None unless ``room`` bytes are mapped from each. Computed unsigned: an
        address below the region wraps to a huge value, so one maximum checks both ends."""
        start, end = self.mem.single  # type: ignore[misc]
        rel = self.ring.desc_addr[at] + np.uint64((-self.mem.lo - start) & _MASK64)
        if int(_max(rel)) > end - start - room:
            return None
        return rel.view(np.int64)

    def _chained(self, heads: np.ndarray) -> bool:
        """Whether the burst's first descriptor has a successor: a driver that puts the header
        in a descriptor of its own (ours when it posts pool buffers), so the pair path is tried
        rather than the one-descriptor path."""
        return bool(int(self.ring.desc_word[int(heads[0])]) >> 32 & VRING_DESC_F_NEXT)

    def _land(
        self,
        pool: BufferPool,
        heads: np.ndarray,
        frm: np.ndarray,
        ln: np.ndarray,
        hdr: np.ndarray | None,
        start: int,
        width: int,
    ) -> np.ndarray:
        """The checked fast paths' common end: copy each frame (``frm``: offsets from the
        region's ``start``; ``ln`` bytes, at most ``width``) and its header's metadata into
        fresh pool buffers, and complete the descriptors. A pool short of buffers takes what
        it can; the rest stays on the ring for later."""
        bufs = pool.alloc(len(heads), plain=hdr is None)
        k = len(bufs)
        if k < len(heads):
            if not k:
                return EMPTY
            heads, frm, ln = heads[:k], frm[:k], ln[:k]
            if hdr is not None:
                hdr = hdr[:k]
        got = bufs.astype(np.intp)
        if width:
            self._rows(pool)(width)[got] = self.mem.void_window(width)[start:][frm]
        if hdr is not None:
            self._vnet(pool)[got] = self.mem.void_window(VNET_HDR_LEN)[hdr]
        pool.lengths[got] = ln
        self._complete(heads, 0)
        return bufs

    def _pair_heads(self, heads: np.ndarray, flags: int) -> np.ndarray | None:
        """The data descriptors of a burst of two-descriptor chains (intp), or None unless every
        head is exactly a header (``hdr_len`` bytes, ``flags`` and NEXT) and every successor
        is in the ring. Two reductions check all lengths and flags at once."""
        r = self.ring
        w0 = r.desc_word[heads.astype(np.intp)]
        want = self.hdr_len | (flags | VRING_DESC_F_NEXT) << 32
        lf = w0 & _LEN_FLAGS
        if int(lf.min()) != want or int(lf.max()) != want:
            return None
        nxt = (w0 >> np.uint64(48)).astype(np.intp)
        if int(nxt.max()) >= self.size:
            return None  # (the general path says why)
        return nxt

    def _receive_pair(self, pool: BufferPool, heads: np.ndarray) -> np.ndarray | None:
        """Like :meth:`_receive_simple` for packets of two descriptors, the header's and the
        frame's (a driver sending its packet buffers where they lie, without copying them
        behind a header first)."""
        r = self.ring
        nxt = self._pair_heads(heads, 0)
        if nxt is None:
            return None
        ln = r.desc_word[nxt] & _LEN_FLAGS  # flags must be 0: anything else makes it huge
        longest = int(_max(ln))
        if longest > pool.buf_size:
            return None
        width = -(-longest // _WIDTH_STEP) * _WIDTH_STEP
        start = self.mem.single[0]  # type: ignore[index]
        frm = self._in_region(nxt, width)
        if frm is None:
            return None
        hdr = None
        if self.read_vnet:
            at_hdr = self._in_region(heads.astype(np.intp), self.hdr_len)
            if at_hdr is None:
                return None
            hdr = self._headers_with_metadata(at_hdr, start)
        return self._land(pool, heads, frm, ln, hdr, start, width)

    def _gather(self, head: int, limit: int) -> np.ndarray | int | None:
        """One packet from a chain of any shape (the per-packet path), header included; None for
        a packet shorter than its header, its length (an int) for one whose frame is longer than
        ``limit``."""
        segs = self._chain(head, writable=False)
        total = sum(ln for _, ln in segs)
        if total < self.hdr_len:
            return None
        if total > limit + self.hdr_len:
            return total - self.hdr_len
        flat = self.mem.flat
        if len(segs) == 1:
            o, ln = segs[0]
            return flat[o : o + ln]
        return np.concatenate([flat[o : o + ln] for o, ln in segs])

    # -- our transmit -> the driver's receive queue --------------------------------------------

    def deliver(self, pool: BufferPool, bufs: np.ndarray, mergeable: bool) -> int:
        """Write packets into the driver's receive buffers; returns how many were taken."""
        total = len(bufs)
        done = 0
        meta = bool(_or(pool.vnet_word[bufs])) if total else False  # any header to write?
        while done < total:
            n, heads = self._available(total - done)
            if not n:
                break
            batch = bufs[done : done + n]
            if self.mem.single is not None:
                quick = self._deliver_pair if self._chained(heads) else self._deliver_simple
                if quick(pool, heads, batch, meta):
                    done += n
                    continue
            lens = pool.lengths[batch].astype(np.int64)
            need = lens + self.hdr_len
            d = self.ring.desc[heads]
            dlen = d["len"].astype(np.int64)
            flags = d["flags"]
            off, inside = self.mem.offsets(d["addr"], need)
            fast = ((flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT)) == 0) & (dlen >= need) & inside
            fast &= (flags & VRING_DESC_F_WRITE) != 0
            fast &= lens <= pool.buf_size  # a large buffer's frame spans rows: the per-packet path
            k = n if fast.all() else int(np.argmin(fast))  # the leading run of simple packets
            if k:
                width = int(need[:k].max())
                w_ok = (dlen[:k] >= width) & (off[:k] + width <= self.mem.region_end(off[:k]))
                if not w_ok.all():
                    width = -1  # buffers of mixed sizes: write each at its own length below
                if width > 0:
                    src = np.empty((k, width), np.uint8)
                    src[:, : self.hdr_len] = self.hdr_template
                    if meta:
                        src[:, :VNET_HDR_LEN] = _metadata(pool, batch[:k])
                    src[:, self.hdr_len :] = pool.data[batch[:k], : width - self.hdr_len]
                    self.mem.window(width)[off[:k]] = src
                else:
                    flat, data, h = self.mem.flat, pool.data, self.hdr_len
                    for o, b, ln in zip(off[:k].tolist(), batch[:k].tolist(), lens[:k].tolist(), strict=True):
                        flat[o : o + h] = self.hdr_template
                        if meta and pool.vnet_word[b]:
                            flat[o : o + VNET_HDR_LEN] = pool.vnet[b]
                        flat[o + h : o + h + ln] = data[b, :ln]
                self._complete(heads[:k], need[:k])
                done += k
                continue
            # The first packet needs a chain, several merged buffers, or is refused.
            outcome = self._deliver_one(pool, int(batch[0]), mergeable)
            if outcome == NO_BUFFERS:
                break
            if outcome == TOO_LARGE:
                self.too_large += 1
            done += 1
        if done:
            pool.free(bufs[:done])
        return done

    def _deliver_simple(self, pool: BufferPool, heads: np.ndarray, batch: np.ndarray, meta: bool) -> bool:
        """The common burst: every receive buffer one device-writable descriptor large enough
        for the longest packet, inside the single region. Header and frames are written with two
        scatters. False: take the general path (nothing has been written)."""
        r = self.ring
        at = heads.astype(np.intp)
        src = batch.astype(np.intp)
        ln = pool.lengths[src]
        longest = int(_max(ln))
        h = self.hdr_len
        width = longest + h
        # flags exactly WRITE and every length at least ``width``: one range check on len|flags
        word = r.desc_word[at] & _LEN_FLAGS
        if longest > pool.buf_size or int(word.min()) < _WRITE_ONLY_INT + width:
            return False
        if int(word.max()) > _WRITE_ONLY_INT + 0xFFFFFFFF:
            return False
        start = self.mem.single[0]  # type: ignore[index]
        to = self._in_region(at, width)
        if to is None:
            return False
        mem = self.mem
        mem.void_window(h)[start:][to] = self.hdr_void
        if meta:
            mem.void_window(VNET_HDR_LEN)[start:][to] = _metadata(pool, src).view(_VNET_VOID).reshape(-1)
        if longest:
            mem.void_window(longest)[start + h :][to] = self._rows(pool)(longest)[src]
        self._complete(heads, ln + h)
        return True

    def _deliver_pair(self, pool: BufferPool, heads: np.ndarray, batch: np.ndarray, meta: bool) -> bool:
        """Like :meth:`_deliver_simple` for receive buffers of two descriptors, a header's and a
        frame's (a driver receiving straight into its packet buffers): three scatters."""
        r = self.ring
        nxt = self._pair_heads(heads, VRING_DESC_F_WRITE)
        if nxt is None:
            return False
        src = batch.astype(np.intp)
        ln = pool.lengths[src]
        longest = int(_max(ln))
        h = self.hdr_len
        word = r.desc_word[nxt] & _LEN_FLAGS  # flags exactly WRITE, room for the longest frame
        if longest > pool.buf_size or int(word.min()) < _WRITE_ONLY_INT + longest:
            return False
        if int(word.max()) > _WRITE_ONLY_INT + 0xFFFFFFFF:
            return False
        start = self.mem.single[0]  # type: ignore[index]
        hto = self._in_region(heads.astype(np.intp), h)
        to = self._in_region(nxt, longest)
        if hto is None or to is None:
            return False
        mem = self.mem
        mem.void_window(h)[start:][hto] = self.hdr_void
        if meta:
            mem.void_window(VNET_HDR_LEN)[start:][hto] = _metadata(pool, src).view(_VNET_VOID).reshape(-1)
        if longest:
            mem.void_window(longest)[start:][to] = self._rows(pool)(longest)[src]
        self._complete(heads, ln + h)
        return True

    #: packets accepted but dropped because the driver's buffers could never hold them
    too_large = 0

    def _deliver_one(self, pool: BufferPool, buf: int, mergeable: bool) -> int:
        """One packet across a descriptor chain, or (mergeable) across several buffers."""
        ln = int(pool.lengths[buf])
        payload = np.concatenate([self.hdr_template, pool.frame(buf, ln)])
        if pool.vnet_word[buf]:
            payload[:VNET_HDR_LEN] = pool.vnet[buf]
        avail = (int(self.ring.avail_idx[0]) - self.last_avail) & 0xFFFF
        plan: list[tuple[int, list[tuple[int, int]]]] = []
        room = 0
        while room < len(payload):
            if len(plan) >= avail:
                return NO_BUFFERS
            if plan and not mergeable:
                return TOO_LARGE  # one chain is all a packet may use; this one cannot fit
            head = int(self.ring.avail_ring[(self.last_avail + len(plan)) & self.ring.mask])
            if head >= self.size:
                raise RingError(f"descriptor index {head} out of a ring of {self.size}")
            segs = self._chain(head, writable=True)
            plan.append((head, segs))
            room += sum(s for _, s in segs)
        if self.hdr_len >= 12:
            payload[10:12] = np.array([len(plan)], "<u2").view(np.uint8)
        flat = self.mem.flat
        pos = 0
        lens = []
        for _, segs in plan:
            start = pos
            for o, seg in segs:
                k = min(seg, len(payload) - pos)
                flat[o : o + k] = payload[pos : pos + k]
                pos += k
            lens.append(pos - start)
        self._complete(np.array([h for h, _ in plan], np.int64), np.array(lens, np.int64))
        return DELIVERED

    # -- notifications -------------------------------------------------------------------------

    def want_kicks(self, on: bool) -> None:
        """Ask the driver to kick (we may sleep) or not (we are polling anyway)."""
        if on == self.notify_on:
            return
        self.notify_on = on
        r = self.ring
        if self.event_idx:
            if on:
                r.avail_event[0] = self.last_avail
        else:
            r.used_flags[0] = 0 if on else VRING_USED_F_NO_NOTIFY

    def rearm(self) -> bool:
        """Going idle: kicks on, drain the kick counter, and say whether packets slipped in."""
        self.want_kicks(True)
        if self.event_idx:
            self.ring.avail_event[0] = self.last_avail
        if self.kick_fd is not None:
            with contextlib.suppress(OSError):
                os.eventfd_read(self.kick_fd)
        return int(self.ring.avail_idx[0]) != self.last_avail
