"""A TPACKET_V2 receive ring: frames handed over one by one, read in runs with vector operations.

A phy port's ringless socket (``spp.engine.ports.phy``: the one that gets the interface's frames
while the port is idle or carries a moderate flow, so that no frame waits for a V3 block to
retire) has this ring. The kernel writes each frame into the next fixed-size slot and sets the
slot's ``tp_status`` to "user" at once, so a lone frame is readable (and wakes an ``epoll``)
the moment it arrives, and a reader needs no syscall at all to take frames: it reads status
words in memory.

* **A run of ready slots** from the head is found with one strided read of their status words;
  their headers (``struct tpacket2_hdr``) are one strided ``(slot x u32)`` view, so lengths,
  offsets, VLAN metadata and timestamps of the whole run come out of a fixed number of numpy
  operations, and plain frames (the usual case) are copied into pool buffers with one strided
  copy, or relayed to another socket with ``sendmmsg`` iovecs pointing into the ring.
* **Slots are given back** by writing ``TP_STATUS_KERNEL`` into the run's status words, one
  strided store, after their frames have been copied or sent.
* **A handful of frames** (a trickle, where latency counts and every step runs cold) is read
  with plain Python ints instead: a dozen numpy calls would cost more than the loop.
* **Frames longer than a slot** (jumbo frames, GSO aggregates with offloads on): the kernel
  truncates the slot's copy and, with ``PACKET_COPY_THRESH`` set, queues the whole frame on the
  socket as well and marks the slot ``TP_STATUS_COPY``; the reader takes it with one ``recv``
  at that slot's turn, so wire order holds.
* ``PACKET_VNET_HDR`` puts each frame's ``struct virtio_net_hdr`` right before it in the slot
  (and in front of a queued copy), so header and frame are one contiguous run.

Runts, frames cut short and frames no buffer can hold are consumed, counted by reason and never
delivered; a VLAN tag the kernel moved into metadata is put back in the frame, and the
``virtio_net_hdr`` offsets move with it.
"""

from __future__ import annotations

import contextlib
import mmap
import socket
import struct

import numpy as np

from spp.engine.linux import (
    ETH_HLEN,
    ETH_P_8021Q,
    MSG_DONTWAIT,
    MSG_TRUNC,
    PACKET_COPY_THRESH,
    PACKET_RX_RING,
    PACKET_VERSION,
    SOL_PACKET,
    TP_STATUS_COPY,
    TP_STATUS_KERNEL,
    TP_STATUS_USER,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    TPACKET_V2,
    VLAN_HLEN,
)
from spp.engine.offload import GSO_NONE, NEEDS_CSUM
from spp.engine.pool import BufferPool
from spp.engine.shm import VNET_HDR_LEN

__all__ = ["FrameRing", "shift_vnet"]

# struct tpacket2_hdr as u32 columns: 0 status, 1 len, 2 snaplen, 3 mac|net<<16, 4 sec, 5 nsec,
# 6 vlan_tci|vlan_tpid<<16, 7 padding.
C_STATUS, C_LEN, C_SNAP, C_MAC, C_SEC, C_NSEC, C_VLAN = 0, 1, 2, 3, 4, 5, 6
_HDR = struct.Struct("<IIIHHIIHH")
#: runs up to this many frames are read with Python ints (see the module docstring)
FEW = 4
#: a run with any of these needs the per-frame path: a tag to put back, a queued copy
_SPECIAL = TP_STATUS_VLAN_VALID | TP_STATUS_COPY
EMPTY = np.empty(0, np.uint32)
#: what :meth:`FrameRing.relay` returns: addresses and lengths to send, and slots to release
Run = tuple[np.ndarray | list[int], np.ndarray | list[int], int]
_or = np.bitwise_or.reduce
_min = np.minimum.reduce
_max = np.maximum.reduce


class FrameRing:
    """A TPACKET_V2 rx ring of ``nframes`` slots of ``frame_size`` bytes on ``sock`` (not yet
    bound: the version, header and ring must be set before frames can arrive).

    ``vnet``: the socket has PACKET_VNET_HDR. ``limit``: the longest frame delivered (a large
    buffer's size). ``capacity``: the most frames :meth:`relay` takes per call. Raises OSError
    where the kernel refuses the ring.
    """

    def __init__(
        self,
        sock: socket.socket,
        nframes: int,
        *,
        vnet: bool,
        limit: int,
        capacity: int,
        frame_size: int = 2048,
    ) -> None:
        per_block = max(1, mmap.PAGESIZE // frame_size)
        block = per_block * frame_size
        if block % mmap.PAGESIZE or nframes % per_block:
            raise ValueError("ring geometry: frames must tile whole pages")
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        # Frames longer than a slot are also queued whole on the socket (TP_STATUS_COPY).
        sock.setsockopt(SOL_PACKET, PACKET_COPY_THRESH, 1)
        req = struct.pack("4I", block, nframes // per_block, frame_size, nframes)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.sock = sock
        self.fd = sock.fileno()
        self.nframes = nframes
        self.frame_size = fs = frame_size
        self.hdr = VNET_HDR_LEN if vnet else 0
        self.limit = limit
        self._mm = mm = mmap.mmap(self.fd, nframes * fs, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._u8 = np.frombuffer(mm, np.uint8)
        base = self._u8.ctypes.data
        #: the slots' headers as (slot x u32 column) and their bytes as (slot x byte), in place
        self._cols = np.ndarray((nframes, 8), "<u4", buffer=mm, strides=(fs, 4))
        self._status = self._cols[:, C_STATUS]
        self._slots = np.ndarray((nframes, fs), np.uint8, buffer=mm, strides=(fs, 1))
        self._slot_addr = base + fs * np.arange(nframes, dtype=np.uint64)
        self._base = base
        self._mv32 = memoryview(mm).cast("I")
        #: the ring's bytes (:meth:`lone`'s offsets are into it)
        self.view = memoryview(mm)
        self._words = fs >> 2
        self.head = 0
        # Frames the relay sends from our own memory (a tag put back, a queued copy): room for
        # header, the longest frame and a tag, for each frame of the longest run it reads (virtual
        # memory: only the pages such frames touch are ever faulted in).
        self.capacity = capacity
        self._spill_size = (self.hdr + limit + VLAN_HLEN + 4095) & ~4095
        self._spill: np.ndarray | None = None
        self._spill_n = 0

    # -- state -----------------------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether the head slot holds a frame."""
        return bool(self._mv32[self.head * self._words] & TP_STATUS_USER)

    def _run(self, max_n: int) -> int:
        """How many slots from the head hold frames (at most ``max_n``, not across the ring's end)."""
        h, mv32, w = self.head, self._mv32, self._words
        if max_n <= 0 or not mv32[h * w] & TP_STATUS_USER:
            return 0
        end = min(h + max_n, self.nframes)
        # A lone frame (the idle case, where every step runs cold) is found with Python ints
        # alone; the status words of a longer run are read with one strided vector operation.
        k = 1
        while k <= FEW and h + k < end and mv32[(h + k) * w] & TP_STATUS_USER:
            k += 1
        if k <= FEW or h + k >= end:
            return k
        empty = (self._status[h + k : end] & TP_STATUS_USER) == 0
        j = int(empty.argmax())
        return k + (j if empty[j] else end - h - k)

    def release(self, k: int) -> None:
        """Give the ``k`` slots from the head back to the kernel (their frames were copied or sent)."""
        h = self.head
        if k <= FEW:
            mv32, w = self._mv32, self._words
            for i in range(h, h + k):
                mv32[i * w] = TP_STATUS_KERNEL
        else:
            self._status[h : h + k] = TP_STATUS_KERNEL
        self.head = (h + k) % self.nframes

    def discard_ready(self) -> int:
        """Give back every frame waiting (copies that slipped in before the socket was set up)."""
        n = 0
        while self.ready():
            if self._mv32[self.head * self._words] & TP_STATUS_COPY:
                self._recv_copy(np.empty(16, np.uint8))
            self.release(1)
            n += 1
        return n

    # -- phy to phy: frames sent straight out of the ring ----------------------------------------

    def _lone(self) -> int:
        """The head slot's header as an index into the ring's u32 words, when its frame is the
        only one ready and can be taken as it is (whole, no tag to put back, no queued copy, not
        a runt, not too long); -1 otherwise (nothing ready, a run, or a frame that needs the
        general path).

        The idle panel's case: a ping meets a worker that has not touched this path for
        milliseconds, so every line of code and data it touches is a cache miss. A few ints read
        here and one plain ``send`` or copy cost far less than the general paths (a dozen numpy
        calls, ``sendmmsg`` through ctypes): the request leg's relay of a ping through an nfv went
        from ~130 to ~95 µs, kernel work included.
        """
        h, mv32, w = self.head, self._mv32, self._words
        at = h * w
        status = mv32[at]
        if not status & TP_STATUS_USER or status & _SPECIAL:
            return -1
        if mv32[at + w if h + 1 < self.nframes else 0] & TP_STATUS_USER:
            return -1
        ln = mv32[at + C_LEN]
        if mv32[at + C_SNAP] != ln or not ETH_HLEN <= ln <= self.limit:
            return -1
        return at

    def lone(self) -> tuple[int, int] | None:
        """The lone head frame (see :meth:`_lone`) as ``(offset, length)`` of header + frame in
        :attr:`view`, to send as it is, then :meth:`release` one slot; None if there is none."""
        at = self._lone()
        if at < 0:
            return None
        mv32, hdr = self._mv32, self.hdr
        return self.head * self.frame_size + (mv32[at + C_MAC] & 0xFFFF) - hdr, mv32[at + C_LEN] + hdr

    def recv_one(self, pool: BufferPool) -> int:
        """The lone head frame (see :meth:`_lone`) in a pool buffer, metadata and stamp set, its
        slot given back; the buffer, or -1 if there is no lone frame or no free buffer (then
        nothing was taken: :meth:`recv` sorts it out)."""
        at = self._lone()
        if at < 0:
            return -1
        if pool.buf_size < self.limit and self._mv32[at + C_LEN] > pool.buf_size:
            return -1  # a large buffer's case
        b = pool.alloc_one()
        if b < 0:
            return -1
        mv32 = self._mv32
        src = self.head * self.frame_size + (mv32[at + C_MAC] & 0xFFFF)
        stamp = mv32[at + C_SEC] * 1_000_000_000 + mv32[at + C_NSEC]
        self._put_plain(pool, b, src, mv32[at + C_LEN], stamp)
        self.release(1)
        return b

    def _put_plain(self, pool: BufferPool, b: int, src: int, ln: int, stamp: int) -> None:
        """The untagged ``ln``-byte frame at ``src`` in the ring into buffer ``b``, with its
        header (or "nothing to do"), length and stamp: memoryview slices and Python ints, since a
        cold numpy call costs several µs and these are the per-frame paths."""
        ring = self.view
        o = b * pool.buf_size
        pool.data_mv[o : o + ln] = ring[src : src + ln]
        v = b * VNET_HDR_LEN
        if self.hdr:
            pool.vnet_mv[v : v + VNET_HDR_LEN] = ring[src - VNET_HDR_LEN : src]
        else:
            pool.vnet_mv[v : v + 2] = b"\0\0"
        pool.len_mv[b] = ln
        pool.stamp_mv[b] = stamp

    def relay(self, max_n: int, drops: list[int]) -> Run:
        """The ready run from the head (at most ``max_n`` frames) as ``(addresses, lengths, k)``:
        header + frame runs to send as they are (into the ring, or into our own memory for a
        frame that needed a tag put back or came as a queued copy), and the ``k`` slots to
        :meth:`release` once they are sent. ``drops`` gets ``[runts, too_long]`` added to it."""
        k = self._run(min(max_n, self.capacity))
        if not k:
            return [], [], 0
        h, hdr = self.head, self.hdr
        if k > FEW:
            cols = self._cols[h : h + k]
            snap = cols[:, C_SNAP]
            if (
                not int(_or(cols[:, C_STATUS])) & _SPECIAL
                and int(_min(snap)) >= ETH_HLEN
                and int(_max(snap)) <= self.limit
                and np.array_equal(snap, cols[:, C_LEN])
            ):
                addrs = cols[:, C_MAC] & 0xFFFF
                addrs = addrs.astype(np.uint64)
                addrs += self._slot_addr[h : h + k]
                lens = snap.astype(np.int64)
                if hdr:
                    addrs -= np.uint64(hdr)
                    lens += hdr
                return addrs, lens, k
        addrs_l: list[int] = []
        lens_l: list[int] = []
        mm, fs, base = self._mm, self.frame_size, self._base
        self._spill_n = 0
        for i in range(h, h + k):
            status, ln, snap, mac, _net, _sec, _nsec, tci, tpid = _HDR.unpack_from(mm, i * fs)
            where = self._special(i, status, ln, snap, mac, tci, tpid, drops)
            if where is None:
                addrs_l.append(base + i * fs + mac - hdr)
                lens_l.append(hdr + snap)
            elif where[1]:
                addrs_l.append(where[0])
                lens_l.append(where[1])
        return addrs_l, lens_l, k

    def _special(
        self, i: int, status: int, ln: int, snap: int, mac: int, tci: int, tpid: int, drops: list[int]
    ) -> tuple[int, int] | None:
        """Slot ``i`` for the relay: None if its frame can go from the ring as it is, else
        ``(address, length)`` of header + frame in spill memory, or ``(0, 0)`` when it was
        dropped (and counted)."""
        hdr = self.hdr
        if status & TP_STATUS_COPY:
            spill = self._spill_slot()
            got = self._recv_copy(spill)
            ln = got - hdr
            src = spill[hdr:]
            vh = spill[:hdr]
        elif snap < ln:
            drops[1] += 1  # cut short, and no whole copy queued (the socket's buffer was full)
            return 0, 0
        elif status & TP_STATUS_VLAN_VALID and ETH_HLEN <= ln <= self.limit:
            spill = self._spill_slot()
            at = i * self.frame_size + mac
            spill[: hdr + ln] = self._u8[at - hdr : at + ln]
            src, vh = spill[hdr:], spill[:hdr]
        else:
            src = vh = None
        if ln < ETH_HLEN:
            drops[0] += 1
            return 0, 0
        if ln > self.limit:
            drops[1] += 1
            return 0, 0
        if src is None:
            return None
        assert vh is not None
        if status & TP_STATUS_VLAN_VALID:
            _copy_tagged(src, src, ln, _tag(status, tpid, tci))  # in place: the spill has room
            if hdr:
                shift_vnet(vh, VLAN_HLEN)
            ln += VLAN_HLEN
        return src.ctypes.data - hdr, hdr + ln

    def _spill_slot(self) -> np.ndarray:
        """The next piece of spill memory for this call's run (made on first use: only frames
        that need it ever touch it)."""
        if self._spill is None:
            self._spill = np.empty(self.capacity * self._spill_size, np.uint8)
        n = self._spill_n
        self._spill_n = n + 1
        return self._spill[n * self._spill_size : (n + 1) * self._spill_size]

    def _recv_copy(self, into: np.ndarray) -> int:
        """The whole frame the kernel queued for a TP_STATUS_COPY slot, header included, into
        ``into``; its length (longer than ``into`` if it did not fit), 0 if none was queued."""
        try:
            return self.sock.recv_into(into, len(into), MSG_DONTWAIT | MSG_TRUNC)
        except OSError:
            return 0

    # -- into pool buffers -------------------------------------------------------------------------

    def recv(self, pool: BufferPool, max_n: int, drops: list[int]) -> np.ndarray:
        """Up to ``max_n`` frames from the head as pool buffers (the caller owns them), in wire
        order. If the pool runs dry, the frames it cannot take stay in the ring.
        ``drops`` gets ``[runts, too_long]`` added to it."""
        k = self._run(max_n)
        if not k:
            return EMPTY
        h = self.head
        if k > FEW:
            cols = self._cols[h : h + k]
            snap = cols[:, C_SNAP]
            mac = cols[:, C_MAC] & 0xFFFF
            width = int(_max(snap))
            m0 = int(mac[0])
            if (
                not int(_or(cols[:, C_STATUS])) & _SPECIAL
                and int(_min(snap)) >= ETH_HLEN
                and width <= pool.buf_size
                and np.array_equal(snap, cols[:, C_LEN])
                and bool((mac == m0).all())
            ):
                bufs = pool.alloc(k, plain=False)
                m = len(bufs)
                if not m:
                    return EMPTY
                bi = bufs.astype(np.intp)
                rows = self._slots[h : h + m]
                # One strided copy: every slot's frame starts at the same offset.
                pool.data[bi, :width] = rows[:, m0 : m0 + width]
                pool.lengths[bi] = snap[:m]
                ts = cols[:m, C_SEC].astype(np.uint64)
                ts *= np.uint64(1_000_000_000)
                ts += cols[:m, C_NSEC]
                pool.stamps[bi] = ts
                if self.hdr:
                    pool.vnet[bi] = rows[:, m0 - VNET_HDR_LEN : m0]
                else:
                    pool.vnet_word[bi] = 0
                self.release(m)
                return bufs
        return self._recv_each(pool, h, k, drops)

    def _recv_each(self, pool: BufferPool, h: int, k: int, drops: list[int]) -> np.ndarray:
        """:meth:`recv` frame by frame, with Python ints: a handful of frames, or a run with
        frames that need care (tags, queued copies, runts, long frames)."""
        small = pool.alloc(k, plain=False).tolist()
        used = 0
        out: list[int] = []
        mm, fs, u8, hdr = self._mm, self.frame_size, self._u8, self.hdr
        bs = pool.buf_size
        data, lengths, stamps = pool.data, pool.lengths, pool.stamps
        done = 0
        for i in range(h, h + k):
            status, ln, snap, mac, _net, sec, nsec, tci, tpid = _HDR.unpack_from(mm, i * fs)
            tagged = status & TP_STATUS_VLAN_VALID
            olen = ln + (VLAN_HLEN if tagged else 0)
            copy = status & TP_STATUS_COPY
            if not copy and snap < ln:
                drops[1] += 1
            elif ln < ETH_HLEN:
                drops[0] += 1
                if copy:
                    self._recv_copy(np.empty(16, np.uint8))
            elif olen > bs or copy:
                big = self._recv_large(pool, i, status, ln, mac, tci, tpid, drops)
                if big >= 0:
                    out.append(big)
                    stamps[big] = sec * 1_000_000_000 + nsec
            else:
                if used >= len(small):
                    break  # the pool ran dry: this frame and those behind it stay in the ring
                b = small[used]
                used += 1
                at = i * fs + mac
                if not tagged:
                    self._put_plain(pool, b, at, ln, sec * 1_000_000_000 + nsec)
                else:
                    _copy_tagged(data[b], u8[at : at + ln], ln, _tag(status, tpid, tci))
                    if not hdr:
                        pool.vnet_word[b] = 0
                    else:
                        pool.vnet[b] = u8[at - VNET_HDR_LEN : at]
                        shift_vnet(pool.vnet[b], VLAN_HLEN)
                    lengths[b] = olen
                    stamps[b] = sec * 1_000_000_000 + nsec
                out.append(b)
            done += 1
        if used < len(small):
            pool.free(np.array(small[used:], np.uint32))
        self.release(done)
        return np.array(out, np.uint32) if out else EMPTY

    def _recv_large(
        self, pool: BufferPool, i: int, status: int, ln: int, mac: int, tci: int, tpid: int, drops: list[int]
    ) -> int:
        """Slot ``i``'s frame (a queued copy, or longer than a pool buffer) in a large buffer;
        -1 when none is free or the frame cannot be delivered (dropped and counted)."""
        hdr = self.hdr
        copy = status & TP_STATUS_COPY
        got = pool.alloc_large(1) if pool.large_size > pool.buf_size else EMPTY
        tagged = status & TP_STATUS_VLAN_VALID
        room = pool.large_size - (VLAN_HLEN if tagged else 0)
        if not len(got) or ln > room:
            if copy:
                self._recv_copy(np.empty(16, np.uint8))
            if len(got):
                pool.free(got)
            drops[1] += 1
            return -1
        big = int(got[0])
        bs = pool.buf_size
        flat = pool.data.reshape(-1)
        o = big * bs
        # The frame lands 4 bytes on when a tag goes in front of its type field.
        skip = VLAN_HLEN if tagged else 0
        if copy:
            # header + frame straight into the large buffer (the header's 10 bytes land in front
            # of the frame, in the buffer's own room before it: the previous buffer's tail is not
            # ours, so receive into a scratch run instead when there is a header).
            scratch = np.empty(hdr + pool.large_size, np.uint8)
            n = self._recv_copy(scratch)
            if n - hdr != ln or n > len(scratch):
                pool.free(got)
                drops[1] += 1
                return -1
            src = scratch[hdr : hdr + ln]
            vh = scratch[:hdr]
        else:
            at = i * self.frame_size + mac
            src = self._u8[at : at + ln]
            vh = self._u8[at - hdr : at]
        if tagged:
            _copy_tagged(flat[o : o + ln + skip], src, ln, _tag(status, tpid, tci))
        else:
            flat[o : o + ln] = src
        if hdr:
            pool.vnet[big] = vh
            if tagged:
                shift_vnet(pool.vnet[big], VLAN_HLEN)
        else:
            pool.vnet_word[big] = 0
        pool.lengths[big] = ln + skip
        return big

    def close(self) -> None:
        """Unmap the ring (the socket is the caller's to close)."""
        for name in ("_cols", "_status", "_slots", "_u8"):
            self.__dict__.pop(name, None)
        self._mv32.release()
        self.view.release()
        with contextlib.suppress(BufferError):  # a stray view keeps the mapping until it goes
            self._mm.close()


def _tag(status: int, tpid: int, tci: int) -> np.ndarray:
    """The 4 bytes of the 802.1Q/802.1ad tag the kernel moved from a frame into its slot's
    metadata (the TPID is there only when the kernel says so: 802.1Q otherwise)."""
    t = tpid if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
    return np.frombuffer(struct.pack(">HH", t, tci), np.uint8)


def _copy_tagged(dst: np.ndarray, src: np.ndarray, ln: int, tag: np.ndarray) -> None:
    """The ``ln``-byte frame ``src`` into ``dst`` (``ln + 4`` bytes of room) with ``tag`` back
    after the MACs. ``dst`` may be ``src`` itself: the type field and payload move first."""
    dst[ETH_HLEN + VLAN_HLEN - 2 : ln + VLAN_HLEN] = src[12:ln].copy()
    dst[:12] = src[:12]
    dst[12 : 12 + VLAN_HLEN] = tag


def shift_vnet(hdr: np.ndarray, by: int) -> None:
    """A tag went in front of L3: move one virtio_net_hdr's csum_start and hdr_len on."""
    f16 = hdr.view("<u2")
    if hdr[0] & NEEDS_CSUM:
        f16[3] += by
    if hdr[1] != GSO_NONE:
        f16[1] += by
