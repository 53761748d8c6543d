"""``phy:N``: a Linux interface driven through AF_PACKET, the role of a DPDK NIC port.

Receive uses a TPACKET_V3 memory-mapped ring: the kernel writes frames into big blocks and hands
a whole block over at once (when it is full, or after ``retire_ms`` so a lone frame is not held
back). Transmit uses ``sendmmsg`` with iovecs pointing into the shared pool, one syscall per burst.
Both paths do a fixed amount of Python work per burst or per block, never per packet: a block's
frames are located with vectorised strides or a vectorised header scan (:meth:`PhyPort._walk`),
then copied with one numpy gather and scatter per burst.

Semantics, matching a DPDK port as SPP uses it:

* ``rx_burst`` copies frames out of the ring into pool buffers and returns their indices, in wire
  order. A frame whose 802.1Q/802.1ad tag the kernel moved into metadata gets it re-inserted, so
  the bytes are those on the wire. Frames the port itself sent are never received back
  (PACKET_IGNORE_OUTGOING), nor is anything else this host transmits on the interface.
* If the pool is empty, frames stay in the ring (like descriptors a NIC cannot refill); they are
  lost only if the kernel then runs out of ring, and those losses are counted in ``rx_drop``
  from the socket's PACKET_STATISTICS.
* Latency: a V3 block is handed over when full or ``retire_ms`` (>= 1 ms) after it opened, so
  a lone frame would wait a millisecond or two, and a TCP flow's ACK clock with it. The port
  therefore has a second socket, with a TPACKET_V2 ring (:mod:`.framering`: fixed slots, each
  handed over the moment its frame is written, read in runs with vector operations and no
  syscall), in a PACKET_FANOUT group with the V3 ring's socket; a one-instruction classic-BPF
  fanout program picks which of the two gets the interface's frames. The V2 ring (called the
  *ringless* socket below and in the docs, for its per-frame readiness) takes them when the
  port is about to sleep, carries only a trickle, or a flow up to ``IDLE_MAX_PER_MS``; the V3
  ring under heavier load. Switching is one ``setsockopt``, made on a helper thread (it waits
  out an RCU grace period: :mod:`.switcher`); frames already handed to the other socket are
  delivered first, so the order on the wire is kept (:meth:`PhyPort._go_idle`).
* Offloads: both sockets use ``PACKET_VNET_HDR``, so the kernel tells us, per frame, what a
  device would still have had to do (a partial checksum, a TSO/GSO aggregate up to 64 KiB) and
  takes the same on transmit; the ``struct virtio_net_hdr`` goes with the buffer
  (:mod:`spp.engine.offload`). Frames longer than a pool buffer land in a large buffer. Runts and
  frames too long even for that (or cut short) are dropped and counted in ``rx_drop`` and, by
  reason, in ``xstats``.
* ``tx_burst`` returns how many buffers it sent, always a prefix; the caller frees the rest and
  counts them as ``tx_drop``. A frame the kernel refuses (longer than the MTU, a runt, offload
  metadata it rejects) costs only itself: the frames behind it are still sent, and the refused
  ones are moved behind the sent ones in the caller's array (counted in ``xstats``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import mmap
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

import numpy as np

from spp.engine import linux, offload
from spp.engine.linux import (
    ETH_HLEN,
    ETH_P_8021Q,
    FRAME_ERRORS,
    MSG_DONTWAIT,
    PACKET_ADD_MEMBERSHIP,
    PACKET_FANOUT,
    PACKET_FANOUT_CBPF,
    PACKET_FANOUT_FLAG_IGNORE_OUTGOING,
    PACKET_FANOUT_FLAG_UNIQUEID,
    PACKET_IGNORE_OUTGOING,
    PACKET_MR_PROMISC,
    PACKET_QDISC_BYPASS,
    PACKET_RX_RING,
    PACKET_STATISTICS,
    PACKET_VERSION,
    PACKET_VNET_HDR,
    SO_ATTACH_FILTER,
    SO_DETACH_FILTER,
    SO_RCVBUFFORCE,
    SO_SNDBUFFORCE,
    SOL_PACKET,
    TP_STATUS_BLK_TMO,
    TP_STATUS_KERNEL,
    TP_STATUS_USER,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    TPACKET_V3,
    VLAN_HLEN,
    SendBatch,
)
from spp.engine.offload import GSO_NONE, NEEDS_CSUM, VNET_FIELDS, XS, invalid_buf, invalid_one
from spp.engine.portid import PortId
from spp.engine.ports.base import (
    NOTHING,
    PENDING,
    RX,
    RX_BYTES,
    RX_DROP,
    SOME,
    TX,
    TX_BYTES,
    TX_DROP,
    WAKES,
    Port,
    PortContext,
    PortError,
    Step,
    burst_bytes,
    forward_burst,
)
from spp.engine.ports.framering import FrameRing
from spp.engine.ports.switcher import SWITCHER, PendingSwitch
from spp.engine.shm import MAX_PHYS, VNET_HDR_LEN

_VNET_COLS = np.arange(VNET_HDR_LEN, dtype=np.int64)

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1 from byte 8.
BLK_STATUS, BLK_NUM_PKTS, BLK_FIRST, BLK_LEN = 8, 12, 16, 20
# struct tpacket3_hdr as u32 columns: 0 next_offset, 1 sec, 2 nsec, 3 snaplen, 4 len, 5 status,
# 6 mac|net<<16, 7 rxhash, 8 vlan_tci, 9 vlan_tpid|padding<<16.
H_NEXT, H_SEC, H_NSEC, H_SNAP, H_LEN, H_STATUS, H_MAC, H_TCI, H_TPID = 0, 1, 2, 3, 4, 5, 6, 8, 9
_HDR_COLS = np.arange(10, dtype=np.int64)
V3_ALIGN = 8  # frames in a V3 block start at multiples of 8 (the kernel's V3_ALIGNMENT)
MIN_FRAME_STRIDE = 64  # a tpacket3 header and sockaddr_ll alone take more than this

EMPTY = np.empty(0, np.uint32)
SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS: the kernel's receive time of each frame, struct timespec

# Receive modes: frames go to the ring (BUSY), to the ringless socket (IDLE), or to the ring
# while the ringless socket still holds earlier frames (DRAIN); a switch to the ringless socket
# (TO_IDLE: the ring is read) or to the ring (TO_BUSY: the ringless socket is read) is under way
# on the helper thread (:mod:`.switcher`).
BUSY, IDLE, DRAIN, TO_IDLE, TO_BUSY = 0, 1, 2, 3, 4
#: IDLE -> BUSY when the ringless socket delivered this many frames within a millisecond. Its V2
#: ring is read in vector runs with no syscall, so it carries floods too (64 B phy -> phy within
#: ~10 % of the V3 ring's CPU per frame, bench/RESULTS.md), and every switch to blocks stalls the
#: port for an RCU grace period and then holds frames for the retire timer, which a TCP flow pays
#: in rate (its bursts reach 300+ frames per ms): switch only beyond what this host forwards.
IDLE_MAX_PER_MS = 1024
#: frames taken from the ringless socket per call into pool buffers (allocated once the ring's
#: run of ready frames is known)
IDLE_CHUNK = 32
#: frames relayed phy to phy per call from the ringless socket's ring (no buffers at stake): a
#: TCP flow without offloads stays here, and runs of more than a few frames take the vector path
#: (:meth:`.framering.FrameRing.relay`)
RELAY_CHUNK = 64
#: bursts up to this many frames are sent with Python ints rather than vector operations
FEW = 4
#: BUSY -> IDLE when a block retired by its timer held fewer frames (a trickle of traffic)
BUSY_MIN_PER_BLOCK = 64


def _bpf_return(k: int) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    """A one-instruction classic BPF program ``ret #k`` as a ``struct sock_fprog`` (and the
    instruction buffer it points to, which must outlive every setsockopt that uses it)."""
    insn = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, k), 8)  # BPF_RET | BPF_K
    return struct.pack("HxxxxxxQ", 1, ctypes.addressof(insn)), insn


# As a fanout program, ``ret #k`` picks the k-th socket of the group (0: the ring, joined first;
# 1: the ringless socket); as a socket filter, ``ret #0`` accepts nothing.
_TO_RING, _TO_RING_INSN = _bpf_return(0)
_TO_IDLE, _TO_IDLE_INSN = _bpf_return(1)
log = logging.getLogger(__name__)
_max = np.maximum.reduce
_min = np.minimum.reduce
_or = np.bitwise_or.reduce


class PhyPort(Port):
    """``phy:N`` over AF_PACKET. Open sockets lazily: a tx-only port must not own an rx ring that
    fills up and counts drops, and an rx-only port needs no tx socket.

    ``block_size``/``block_nr``/``retire_ms`` size the receive ring. The kernel hands a block
    over when it is full *or* ``retire_ms`` after its first frame, so at moderate rates every
    block holds about a millisecond of traffic, whatever its size: the ring covers roughly
    ``block_nr`` ms of a reader's absence (a GC pause, a descheduled worker) before it drops. The
    defaults (128 x 128 KiB = 16 MiB, 1 ms) therefore favour many small blocks: over 100 ms of
    slack, about 1 ms of added latency for a lone frame, and a per-block cost that stays small
    next to the ~800 minimum-size frames a full block holds.
    """

    needs_polling = False
    BLOCK_SIZE = 128 * 1024
    BLOCK_NR = 128
    RETIRE_MS = 1
    TX_SNDBUF = 4 << 20
    IDLE_RCVBUF = 8 << 20
    #: slots of 2 KiB in the ringless socket's TPACKET_V2 ring (8 MiB): a burst can arrive before
    #: the port switches back to blocks (an RCU grace period, 15-30 ms)
    IDLE_FRAMES = 4096
    DROP_POLL_S = 0.5  # how stale the kernel drop count may get while no block is released

    def __init__(
        self,
        uid: PortId,
        ctx: PortContext,
        *,
        block_size: int | None = None,
        block_nr: int | None = None,
        retire_ms: int | None = None,
    ) -> None:
        super().__init__(uid, ctx)
        phys = ctx.seg.spec.phys
        n = uid.num
        if not phys:
            raise PortError(f"phy:{n} does not exist: the primary has no phy ports")
        if not 0 <= n < min(len(phys), MAX_PHYS):
            raise PortError(f"phy:{n} does not exist: the primary has phy:0..phy:{len(phys) - 1}")
        info = phys[n]
        if info.driver != "af_packet":
            raise PortError(
                f"phy:{n}: driver '{info.driver}' of {info.iface} is not handled by the AF_PACKET driver"
            )
        self.iface = info.iface
        try:
            self.ifindex = linux.if_nametoindex(self.iface)
        except (OSError, ValueError) as e:
            raise PortError(f"phy:{n}: {e}") from None
        self.mac = info.mac
        if self.mac == "00:00:00:00:00:00":
            with contextlib.suppress(OSError):
                self.mac = linux.get_mac(self.iface)
        # Phy counters are shared, per process row, like SPP's port_stats: the primary reports them.
        self.counters = ctx.seg.phy_stats[ctx.client_id, n]
        self.buf_size = ctx.seg.spec.buf_size
        self._data_addr = ctx.seg.buf_data_addr
        self._vnet_addr = ctx.seg.buf_vnet_addr
        self.block_size = block_size or self.BLOCK_SIZE
        self.block_nr = block_nr or self.BLOCK_NR
        self.retire_ms = retire_ms or self.RETIRE_MS
        if self.block_size % mmap.PAGESIZE or self.block_size < 16 * 1024:
            raise PortError(f"phy:{n}: ring block size must be a multiple of {mmap.PAGESIZE} and >= 16 KiB")
        #: blocks whose frames were found by :meth:`_scan`, and scans that payload bytes defeated
        #: (diagnostics: a steady rise in the latter means traffic that mimics ring headers)
        self.blocks_scanned = 0
        self.scan_fallbacks = 0
        #: the errno of the last tx failure (EAGAIN, ENOBUFS, ENETDOWN...), for diagnostics only
        self.tx_error = 0
        self._rx: socket.socket | None = None
        self._idle: socket.socket | None = None  # the ringless socket (None: fanout unavailable)
        self._ready: select.epoll | None = None
        self._frames: FrameRing | None = None  # the ringless socket's TPACKET_V2 ring
        self._switch: PendingSwitch | None = None  # a fanout switch under way
        self._switch_fd = -1  # written by the helper when it is done (in the ``_ready`` set)
        self._relayed = False  # whether frames went phy to phy from the ringless socket
        self._mode = BUSY
        self._placed = 0  # frames the kernel put in the ring (PACKET_STATISTICS), ...
        self._taken = 0  # ... and those we took out of it: the difference is in an open block
        self._idle_window = 0.0  # start of the millisecond in which IDLE counts its frames
        self._idle_count = 0
        self._drain_until = 0.0
        self._trickle = False
        self._tx: socket.socket | None = None
        self._batch: SendBatch | None = None
        self._cut_batch: SendBatch | None = None
        #: whether the sockets speak ``struct virtio_net_hdr`` (PACKET_VNET_HDR was accepted)
        self.rx_vnet = False
        self.tx_vnet = False
        # (no large buffers at all: a long frame can never be delivered, so it is dropped)
        self.large_size = ctx.pool.large_size if ctx.seg.spec.nb_large else self.buf_size
        self._reset_block()

    # -- receive ---------------------------------------------------------------------------------

    def _open_rx(self) -> None:
        bs, nr = self.block_size, self.block_nr
        # Protocol 0: the socket receives nothing until bind() names the interface, so frames of
        # other interfaces never slip into the ring in between.
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        mm: mmap.mmap | None = None
        try:
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            try:
                s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                self.rx_vnet = True
            except OSError:
                self.rx_vnet = False  # then aggregates and partial checksums arrive unmarked
            frame = 2048  # V3 ignores frame geometry beyond this consistency check
            req = struct.pack("7I", bs, nr, frame, bs * nr // frame, self.retire_ms, 0, 0)
            s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            mm = mmap.mmap(s.fileno(), bs * nr, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            s.bind((self.iface, linux.ETH_P_ALL))
            # Promiscuous for as long as the socket lives; the kernel undoes it on close.
            s.setsockopt(
                SOL_PACKET,
                PACKET_ADD_MEMBERSHIP,
                struct.pack("iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b""),
            )
            s.setblocking(False)
        except OSError as e:
            if mm is not None:
                mm.close()
            s.close()
            raise PortError(
                f"phy:{self.uid.num}: cannot open rx on {self.iface}: {e.strerror or e}"
            ) from None
        self._rx = s
        self._mm = mm
        self._ring_bytes = bs * nr
        self._u8 = np.frombuffer(mm, np.uint8)
        self._ring_addr = np.uint64(self._u8.ctypes.data)
        self._u32 = np.frombuffer(mm, "<u4")
        self._u16 = np.frombuffer(mm, "<u2")
        self._mv32 = memoryview(mm).cast("I")
        self._arange = np.arange(bs // MIN_FRAME_STRIDE + 2, dtype=np.int64)
        self._windows: dict[int, np.ndarray] = {}
        self._blk = 0
        self._last_drop_poll = time.monotonic()
        self._placed = self._taken = 0
        self._mode = BUSY
        self._owed_since = 0.0
        self._idle = self._open_idle(s)
        self._ready: select.epoll | None = None
        if self._idle is not None:
            self._ready = select.epoll()
            self._ready.register(s.fileno(), select.EPOLLIN)
            self._ready.register(self._idle.fileno(), select.EPOLLIN)
            self._switch_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._ready.register(self._switch_fd, select.EPOLLIN)

    def _open_idle(self, ring_sock: socket.socket) -> socket.socket | None:
        """Put the ring's socket in a fanout group with a new ringless socket; return the latter,
        or None where the kernel has no CBPF fanout (the port then works on blocks alone)."""
        try:
            flags = PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_UNIQUEID
            try:
                quiet = flags | PACKET_FANOUT_FLAG_IGNORE_OUTGOING
                ring_sock.setsockopt(SOL_PACKET, PACKET_FANOUT, quiet << 16)
                flags = quiet
            except OSError:  # before Linux 6.10 a fanout group cannot ignore outgoing frames
                ring_sock.setsockopt(SOL_PACKET, PACKET_FANOUT, flags << 16)
            group = ring_sock.getsockopt(SOL_PACKET, PACKET_FANOUT) & 0xFFFF
        except OSError:
            return None
        q = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        frames: FrameRing | None = None
        try:
            # Bound but not yet in the group, the socket would get a copy of every frame: keep it
            # deaf with a reject-all filter until it has joined.
            q.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _TO_RING)
            # Stamped by the kernel on arrival (netstamp on), as the V3 ring's frames are: stamps
            # stay in wire order when the port moves between the two rings.
            q.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            if self.rx_vnet:
                q.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)  # as the ring's socket
            limit = self.large_size
            frames = FrameRing(q, self.IDLE_FRAMES, vnet=self.rx_vnet, limit=limit, capacity=RELAY_CHUNK)
            # Frames longer than a slot are queued whole as well: room for a few dozen aggregates.
            try:
                q.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.IDLE_RCVBUF)
            except PermissionError:
                q.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.IDLE_RCVBUF)
            q.bind((self.iface, linux.ETH_P_ALL))
            joined = flags & ~PACKET_FANOUT_FLAG_UNIQUEID
            q.setsockopt(SOL_PACKET, PACKET_FANOUT, group | joined << 16)
            q.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
            q.setblocking(False)
            frames.discard_ready()  # anything that slipped in before the filter took effect
            while True:
                q.recv(1)
        except BlockingIOError:
            self._frames = frames
            return q
        except (OSError, ValueError):
            if frames is not None:
                frames.close()
            q.close()
            return None

    def _reset_block(self) -> None:
        self._held = False
        self._cur = 0
        self._cnt = 0
        self._src: np.ndarray = EMPTY
        self._snap: np.ndarray = EMPTY
        self._olen: np.ndarray = EMPTY
        self._ts: np.ndarray = EMPTY
        self._width = 0  # the longest frame in the block
        self._uniform = False  # every frame in the block has that length
        self._run: np.ndarray | None = None  # the block's frames as a (frame x byte) view, if regular
        self._vlan: np.ndarray | None = None
        self._tags: np.ndarray | None = None
        self._bad: np.ndarray | None = None  # frames to drop (runts, too long, cut short)
        self._big: np.ndarray | None = None  # frames that need a large buffer
        self._vh: np.ndarray | None = None  # the frames' virtio_net_hdr, if any is not zero

    def _walk(self, p: int, npk: int, end: int) -> np.ndarray:
        """Offsets of the ``npk`` frames of a block, starting at ``p``; the block's data ends at ``end``.

        Frames form a chain through ``tp_next_offset``. Following it in Python costs ~0.5 us per
        frame, so guess instead that the stride of the current frame repeats, compute a window of
        candidate offsets at once, check all their ``tp_next_offset`` values in one gather and
        jump to the first mismatch; the window doubles while the guess holds. Python iterations
        are then the number of size changes. When sizes keep changing (IMIX), runs are too short
        for that to pay, and :meth:`_scan` finds the rest of the block's frames in one pass.
        """
        mv32, u32, ar = self._mv32, self._u32, self._arange
        offs = np.empty(npk, np.int64)
        i = 0
        window = 64
        rounds = 0
        scan = npk >= 32
        while i < npk:
            if i == npk - 1:
                offs[i] = p
                i += 1
                break
            if scan and rounds >= 3 and i < rounds * 8:  # runs average under 8 frames
                rest = self._scan(p, npk - i, end)
                if rest is not None:
                    self.blocks_scanned += 1
                    offs[i:] = rest
                    i = npk
                    break
                self.scan_fallbacks += 1
                scan = False  # something in the payload looks like a header: keep walking
            rounds += 1
            nxt = mv32[p >> 2]
            if nxt < MIN_FRAME_STRIDE or p + nxt >= end:
                break  # a chain that leaves the block: keep what was verified
            two = p + 2 * nxt
            if npk - i > 3 and two < end and mv32[(p + nxt) >> 2] == nxt and mv32[two >> 2] == nxt:
                m = min(npk - i, window, (end - 1 - p) // nxt + 1)
                cand = ar[:m] * nxt
                cand += p
                diff = u32[cand[:-1] >> 2] != nxt
                j = int(diff.argmax())
                if diff[j]:
                    offs[i : i + j + 1] = cand[: j + 1]
                    i += j + 1
                    p = int(cand[j])
                    p += mv32[p >> 2]
                    window = 64
                else:
                    # The last candidate's position is proven; its own next offset is not yet.
                    offs[i : i + m - 1] = cand[: m - 1]
                    i += m - 1
                    p = int(cand[m - 1])
                    window = min(window * 2, 1 << 16)
            else:
                offs[i] = p
                i += 1
                p += nxt
        return offs[:i]

    def _scan(self, p: int, npk: int, end: int) -> np.ndarray | None:
        """Offsets of the last ``npk`` frames of a block, from ``p``, found without walking.

        Every frame header but the last satisfies ``tp_next_offset == align8(tp_mac +
        tp_snaplen)``, with the same ``tp_mac`` throughout. Test that at every 8-byte slot from
        ``p`` to ``end`` with three strided views and a few vector operations, then prove that
        the candidates are exactly the chain: the first is ``p`` and each is its predecessor plus
        its predecessor's next offset. Payload bytes that happen to look like a header break the
        proof, and the caller walks instead.
        """
        if npk == 1:
            return np.array([p], np.int64)
        # Slots whose 28 header bytes lie inside the ring; a header never starts closer than that.
        cnt = min((end - p) // V3_ALIGN, (self._ring_bytes - 28 - p) // V3_ALIGN + 1)
        if cnt < npk - 1:
            return None
        # First the cheap filter, over every slot: tp_mac is the same for every frame of an
        # Ethernet device (the ring layout fixes it), and few other 8-byte slots hold that value.
        mac0 = self._mv32[(p + 24) >> 2] & 0xFFFF
        h = (p + 24) >> 1
        pos = np.flatnonzero(self._u16[h : h + 4 * cnt : 4] == mac0)
        # Then the header check, on the survivors only.
        pos *= V3_ALIGN
        pos += p
        w = pos >> 2
        u32 = self._u32
        nx = u32[w]
        want = u32[w + 3]  # tp_snaplen
        want += mac0 + V3_ALIGN - 1
        want &= ~np.uint32(V3_ALIGN - 1)
        pos = pos[nx == want]
        if len(pos) != npk - 1 or pos[0] != p:
            return None
        nxc = u32[pos >> 2].astype(np.int64)
        offs = np.empty(npk, np.int64)
        offs[:-1] = pos
        offs[-1] = pos[-1] + nxc[-1]
        # The proof: each candidate is exactly where its predecessor's next offset points.
        if (offs[1:] != offs[:-1] + nxc).any() or offs[-1] >= end:
            return None
        return offs

    def _take_block(self) -> bool:
        """Pick up the next block the kernel has handed over; False if there is none yet."""
        mv32 = self._mv32
        bs = self.block_size
        while True:
            base = self._blk * bs
            if not mv32[(base + BLK_STATUS) >> 2] & TP_STATUS_USER:
                return False
            npk = mv32[(base + BLK_NUM_PKTS) >> 2]
            self._taken += npk
            if npk:
                break
            self._release_block()  # an empty retired block: nothing to read, give it back
        if (
            npk < BUSY_MIN_PER_BLOCK
            and self._mode == BUSY
            and self._idle is not None
            and mv32[(base + BLK_STATUS) >> 2] & TP_STATUS_BLK_TMO
        ):
            self._trickle = True  # a trickle: switch to per-frame readiness after this block
        first = mv32[(base + BLK_FIRST) >> 2]
        used = mv32[(base + BLK_LEN) >> 2]
        offs = self._walk(base + first, npk, base + (used if first < used <= bs else bs))
        n = len(offs)
        hdr = self._u32[(offs >> 2)[:, None] + _HDR_COLS]
        snap = hdr[:, H_SNAP].astype(np.int64)
        status = hdr[:, H_STATUS]
        self._src = offs + (hdr[:, H_MAC] & 0xFFFF)
        self._snap = snap
        ts = hdr[:, H_SEC].astype(np.uint64)
        ts *= np.uint64(1_000_000_000)
        ts += hdr[:, H_NSEC]
        self._ts = ts
        if n and int(_or(status)) & TP_STATUS_VLAN_VALID:
            # The kernel strips an outer 802.1Q/802.1ad tag into metadata before any packet
            # socket sees the frame; prepare the 4 bytes to put back.
            vlan = (status & TP_STATUS_VLAN_VALID) != 0
            tpid = np.where(status & TP_STATUS_VLAN_TPID_VALID, hdr[:, H_TPID] & 0xFFFF, ETH_P_8021Q)
            tci = hdr[:, H_TCI] & 0xFFFF
            tags = np.empty((n, 4), np.uint8)
            tags[:, 0] = tpid >> 8
            tags[:, 1] = tpid & 0xFF
            tags[:, 2] = tci >> 8
            tags[:, 3] = tci & 0xFF
            self._vlan, self._tags = vlan, tags
            olen = snap + VLAN_HLEN * vlan
        else:
            self._vlan = self._tags = None
            olen = snap
        self._olen = olen
        if n:
            self._width = width = int(_max(snap))
            shortest = int(_min(snap))
            self._uniform = shortest == width
            # Frames that need care (longer than a buffer, runts, truncated) are rare: test the
            # extremes first and build the per-frame masks only when they say there are some.
            if (
                width + (VLAN_HLEN if self._vlan is not None else 0) > self.buf_size
                or shortest < ETH_HLEN
                or not np.array_equal(hdr[:, H_LEN], hdr[:, H_SNAP])
            ):
                runt = snap < ETH_HLEN
                long = (olen > self.large_size) | (hdr[:, H_LEN] != hdr[:, H_SNAP])
                bad = runt | long
                if bad.any():
                    self._bad = bad
                    self.xstats[XS["rx_runt"]] += int(np.count_nonzero(runt))
                    self.xstats[XS["rx_too_long"]] += int(np.count_nonzero(long & ~runt))
                big = (olen > self.buf_size) & ~bad
                self._big = big if big.any() else None
            if self.rx_vnet:
                self._read_vnet(n)
            if self._uniform and self._vlan is None and self._bad is None and self._big is None:
                # Same-size frames at a fixed stride (a run): view them in place as a matrix, so a
                # burst is one strided copy with no gather at all.
                src = self._src
                stride = int(src[1] - src[0]) if n > 1 else width
                if n == 1 or bool((np.diff(src) == stride).all()):
                    self._run = np.ndarray(
                        (n, width), np.uint8, buffer=self._mm, offset=int(src[0]), strides=(stride, 1)
                    )
        if n < npk:
            self.counters[RX_DROP] += npk - n  # frames past a broken chain cannot be found
        self._cur, self._cnt, self._held = 0, n, True
        return True

    def _read_vnet(self, n: int) -> None:
        """Pick up the block's virtio_net_hdrs when any says there is work left (one gather of
        their first two bytes decides); a reinserted VLAN tag moves the offsets 4 bytes on."""
        if not n:
            return
        at = self._src - VNET_HDR_LEN
        if int(at[0]) & 1 or not _or(self._u16[at >> 1]):
            if int(at[0]) & 1:  # (never seen: the kernel aligns frames so that this is even)
                self._vh = self._u8[at[:, None] + _VNET_COLS]
            return
        vh = self._u8[at[:, None] + _VNET_COLS]
        if self._vlan is not None:
            f16 = vh.view("<u2")  # columns: flags|gso_type, hdr_len, gso_size, csum_start, csum_offset
            tagged = self._vlan
            f16[:, 3] += (tagged & ((vh[:, 0] & NEEDS_CSUM) != 0)) * VLAN_HLEN
            f16[:, 1] += (tagged & (vh[:, 1] != GSO_NONE)) * VLAN_HLEN
        self._vh = vh

    def _release_block(self) -> None:
        self._mv32[(self._blk * self.block_size + BLK_STATUS) >> 2] = TP_STATUS_KERNEL
        self._blk = (self._blk + 1) % self.block_nr
        self._reset_block()
        self.poll_drops()

    def _poll_drops_when_due(self) -> None:
        """:meth:`poll_drops` when the last poll is older than ``DROP_POLL_S`` (an idle port's
        receive path: the kernel's drop count may not get staler than that)."""
        if time.monotonic() - self._last_drop_poll > self.DROP_POLL_S:
            self.poll_drops()

    def poll_drops(self) -> int:
        """Add the kernel's ring-full drops since the last call to ``rx_drop``; return them."""
        if self._rx is None:
            return 0
        self._last_drop_poll = time.monotonic()
        try:
            raw = self._rx.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
            pkts, drops, _freezes = struct.unpack("3I", raw)
            self._placed += pkts - drops  # the ring's packet count includes its drops
            if self._idle is not None:
                _, idle_drops = struct.unpack("2I", self._idle.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
                drops += idle_drops
        except OSError:
            return 0
        if drops:  # the kernel clears its counters on every read
            self.counters[RX_DROP] += drops
        return drops

    def _window(self, width: int) -> np.ndarray:
        """The ring as a (start offset x ``width``) byte matrix: row ``o`` is the bytes at ``o``.

        A zero-copy strided view, so a fancy index on rows copies each frame as one contiguous
        run. Cached per width (a handful of distinct frame sizes in practice).
        """
        win = self._windows.get(width)
        if win is None:
            smax = self._ring_bytes - width
            win = np.ndarray((smax + 1, width), np.uint8, buffer=self._mm, offset=0, strides=(1, 1))
            if len(self._windows) < 64:
                self._windows[width] = win
        return win

    def _copy_out(self, bufs: np.ndarray, sel: slice | np.ndarray) -> None:
        """Copy the block's frames ``sel`` into ``bufs``: one gather and one scatter in numpy."""
        pool = self.pool
        data = pool.data
        # intp indices: numpy would convert uint32 ones on every fancy store, at several us each.
        bi = bufs.astype(np.intp)
        if self._run is not None:
            data[bi, : self._width] = self._run[sel]
        else:
            src = self._src[sel]
            width = self._width if self._uniform else int(_max(self._snap[sel]))
            smax = self._ring_bytes - width
            if src[-1] <= smax:  # offsets grow within a block, so the last is the largest
                data[bi, :width] = self._window(width)[src]
            else:
                near_end = src > smax  # only frames in the ring's last ``width`` bytes
                data[bi[~near_end], :width] = self._window(width)[src[~near_end]]
                u8 = self._u8
                for b, s, ln in zip(
                    bi[near_end].tolist(),
                    src[near_end].tolist(),
                    self._snap[sel][near_end].tolist(),
                    strict=True,
                ):
                    data[b, :ln] = u8[s : s + ln]
        pool.lengths[bi] = self._olen[sel]
        pool.stamps[bi] = self._ts[sel]
        if self._vh is None:
            pool.vnet_word[bi] = 0
        else:
            pool.vnet[bi] = self._vh[sel]
        if self._vlan is not None and self._tags is not None:
            vm = self._vlan[sel]
            if vm.any():
                bv = bi[vm]
                hi = min(self._width, self.buf_size - VLAN_HLEN)
                data[bv, ETH_HLEN + 2 : hi + VLAN_HLEN] = data[bv, 12:hi]
                data[bv, 12 : 12 + VLAN_HLEN] = self._tags[sel][vm]

    def _deliver(self, want: int) -> tuple[np.ndarray, bool]:
        """Up to ``want`` frames of the held block as pool buffers; ``(bufs, pool_ran_dry)``."""
        c = self._cur
        k = min(want, self._cnt - c)
        pool = self.pool
        if self._bad is None and self._big is None:
            bufs = pool.alloc(k, plain=False)
            m = len(bufs)
            if m:
                self._copy_out(bufs, slice(c, c + m))
                self._cur = c + m
            return bufs, m < k
        # Some frames of this block cannot be delivered (consume them without a buffer), or need
        # a large buffer: place each kind, in wire order.
        bad = self._bad[c : c + k] if self._bad is not None else np.zeros(k, bool)
        big = self._big[c : c + k] if self._big is not None else np.zeros(k, bool)
        small_pos = np.flatnonzero(~bad & ~big)
        big_pos = np.flatnonzero(big)
        small = pool.alloc(len(small_pos), plain=False) if len(small_pos) else EMPTY
        large = pool.alloc_large(len(big_pos)) if len(big_pos) else EMPTY
        dry = len(small) < len(small_pos) or len(large) < len(big_pos)
        if dry:
            # Stop before the first good frame we have no buffer for; give back what lies beyond.
            cut = min(
                int(small_pos[len(small)]) if len(small) < len(small_pos) else k,
                int(big_pos[len(large)]) if len(large) < len(big_pos) else k,
            )
            k = cut
            ns, nl = int(np.searchsorted(small_pos, cut)), int(np.searchsorted(big_pos, cut))
            pool.free(small[ns:])
            pool.free(large[nl:])
            small, small_pos, large, big_pos = small[:ns], small_pos[:ns], large[:nl], big_pos[:nl]
        if len(small):
            self._copy_out(small, small_pos + c)
        if len(large):
            self._copy_big(large, big_pos + c)
        placed = np.empty(k, np.uint32)
        placed[small_pos] = small
        placed[big_pos] = large
        keep = ~bad[:k]
        self.counters[RX_DROP] += k - int(np.count_nonzero(keep))
        self._cur = c + k
        return (placed[keep] if not keep.all() else placed), dry

    def _copy_big(self, bufs: np.ndarray, positions: np.ndarray) -> None:
        """Copy the block's frames at ``positions`` into the large buffers ``bufs``, one numpy
        copy each (a block holds at most a couple of 64 KiB frames)."""
        pool = self.pool
        flat = pool.data.reshape(-1)
        u8 = self._u8
        bs = self.buf_size
        for b, p in zip(bufs.tolist(), positions.tolist(), strict=True):
            s, ln = int(self._src[p]), int(self._snap[p])
            o = b * bs
            if self._vlan is not None and self._tags is not None and self._vlan[p]:
                flat[o : o + 12] = u8[s : s + 12]
                flat[o + 12 : o + 16] = self._tags[p]
                flat[o + 16 : o + ln + VLAN_HLEN] = u8[s + 12 : s + ln]
            else:
                flat[o : o + ln] = u8[s : s + ln]
        pool.lengths[bufs] = self._olen[positions]
        pool.stamps[bufs] = self._ts[positions]
        if self._vh is None:
            pool.vnet_word[bufs] = 0
        else:
            pool.vnet[bufs] = self._vh[positions]

    def rx_burst(self, max_n: int) -> np.ndarray:
        if self._rx is None:
            self._open_rx()
        mode = self._mode
        if mode == BUSY:
            bufs = self._rx_ring(max_n)
            if self._trickle and not self._held:
                self._go_idle()
            return bufs
        if mode == IDLE:
            bufs = self._rx_ring(max_n)
            if len(bufs) >= max_n or self._owed():
                return bufs  # older frames are still in the ring: the ringless socket waits
            more = self._recv_idle(min(max_n - len(bufs), IDLE_CHUNK))
            if len(more):
                self._count_idle(len(more))
            return more if not len(bufs) else np.concatenate((bufs, more))
        if mode != DRAIN:
            return self._rx_switching(max_n)
        # DRAIN: what the ringless socket still holds came before anything in the ring.
        want = min(max_n, IDLE_CHUNK)
        bufs = self._recv_idle(want)
        if len(bufs) >= want:
            return bufs  # there may be more: the ring waits until the socket reads empty
        if not len(bufs) and time.monotonic() >= self._drain_until:
            self._mode = BUSY
        more = self._rx_ring(max_n - len(bufs))
        return more if not len(bufs) else np.concatenate((bufs, more))

    def rx_one(self) -> int:
        """A lone frame from the ringless socket's ring, when the port is idle and the ring owes
        nothing from before the switch (:meth:`.framering.FrameRing.recv_one`)."""
        frames = self._frames
        if frames is None or not self._ringless_next():
            return SOME
        one = frames.recv_one(self.pool)
        if one >= 0:
            self._count_idle(1)
            return one
        if frames.ready():
            return SOME
        self._poll_drops_when_due()
        return NOTHING

    def tx_one(self, buf: int) -> int:
        # (the first frame, or one tx_burst must finish or refuse, goes the burst way)
        if self._tx is not None and self.tx_vnet:
            sent = self._tx_one(buf)
            if sent >= 0:
                return sent
        return self.tx_burst(np.array((buf,), np.uint32))

    # -- receive: switching between the ring and the ringless socket ---------------------------

    def _go_idle(self) -> None:
        """Start sending the interface's frames to the ringless socket (TO_IDLE until done).

        The kernel installs the new fanout program at once but returns from the ``setsockopt``
        only after an RCU grace period (15-30 ms here), so the helper thread makes the call
        (:mod:`.switcher`) while the worker goes on reading the ring, whose frames are the older
        ones. Frames the ring got before the switch may also sit in a block the kernel has not
        handed over yet; they must come out before anything the ringless socket gets. The ring
        socket's statistics, read *after* the call returned (no frame can reach the ring any
        more), count every frame it took, so the ringless socket is not read until we have taken
        as many out of the ring (:meth:`_owed`).
        """
        self._mode, self._trickle = TO_IDLE, False
        self._start_switch(_TO_IDLE)

    def _go_busy(self) -> None:
        """Start sending the interface's frames to the ring again (TO_BUSY until done): the
        ringless socket, which holds the older frames, is read meanwhile, and emptied (DRAIN)
        before the ring is read."""
        self._mode = TO_BUSY
        self._start_switch(_TO_RING)

    def _start_switch(self, prog: bytes) -> None:
        assert self._rx is not None
        switch = self._switch = PendingSwitch()
        fd, wake_fd = self._rx.fileno(), self._switch_fd
        SWITCHER.submit(lambda: switch.run(fd, prog, wake_fd))

    def _finish_switch(self) -> None:
        """The helper's ``setsockopt`` returned: from now on only one socket gets frames."""
        switch = self._switch
        assert switch is not None and switch.done
        self._switch = None
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._switch_fd)
        to_idle = self._mode == TO_IDLE
        if switch.error:  # (the socket is being closed, or the kernel refused): no switch
            self._mode = BUSY if to_idle else IDLE
            self._idle_window, self._idle_count = time.monotonic(), 0
        elif to_idle:
            self.poll_drops()
            self._mode = IDLE
            self._idle_window, self._idle_count = time.monotonic(), 0
            self._owed_since = 0.0
        else:
            self._mode = DRAIN
            # A frame may still be on its way to the ringless socket on another CPU: keep
            # looking there for a moment even after it first reads empty.
            self._drain_until = time.monotonic() + 0.002

    def _rx_switching(self, max_n: int) -> np.ndarray:
        """rx_burst while a switch is under way: from the socket that holds the older frames."""
        switch = self._switch
        if switch is None or switch.done:
            if switch is not None:
                self._finish_switch()
            return self.rx_burst(max_n)
        if self._mode == TO_IDLE:
            return self._rx_ring(max_n)
        return self._recv_idle(min(max_n, IDLE_CHUNK))

    def _owed(self) -> bool:
        """Whether frames from before :meth:`_go_idle` are still in a block not handed over."""
        if self._placed <= self._taken:
            return False
        now = time.monotonic()
        if not self._owed_since:
            self._owed_since = now
        elif now - self._owed_since > 0.05:  # far beyond any block's retirement: miscounted
            self._taken = self._placed
            return False
        return True

    def _block_ready(self) -> bool:
        return bool(self._mv32[(self._blk * self.block_size + BLK_STATUS) >> 2] & TP_STATUS_USER)

    def _recv_idle(self, max_n: int) -> np.ndarray:
        """Up to ``max_n`` frames from the ringless socket's ring (:mod:`.framering`)."""
        if self._frames is None or max_n <= 0:
            return EMPTY
        drops = [0, 0]
        bufs = self._frames.recv(self.pool, max_n, drops)
        if drops[0] or drops[1]:
            self.counters[RX_DROP] += drops[0] + drops[1]
            self.xstats[XS["rx_runt"]] += drops[0]
            self.xstats[XS["rx_too_long"]] += drops[1]
        return bufs

    def prepare_sleep(self, waiter: int) -> int:
        """Switch to per-frame readiness, so that a lone frame wakes the worker at once."""
        if self._rx is None:
            self._open_rx()
        if self._held or self._block_ready():
            return PENDING
        if self._idle is None:
            return WAKES  # blocks only: woken when one is handed over
        if self._mode >= TO_IDLE:
            if self._switch is None or self._switch.done:
                return PENDING  # rx_burst finishes the switch
            if self._mode == TO_BUSY and self._peek_idle():
                return PENDING
            # The helper's eventfd is in our epoll set: it wakes the worker when it is done.
            # (Frames that reach the ringless socket while the worker still reads the ring keep
            # it awake until then: a switch is rare, and shorter than a scheduler tick or two.)
            return WAKES
        if self._mode == DRAIN:
            if self._peek_idle():
                return PENDING
            self._mode = BUSY
        if self._mode == BUSY:
            self._go_idle()
        return WAKES

    def _peek_idle(self) -> bool:
        """Whether the ringless socket holds a frame."""
        assert self._frames is not None
        return self._frames.ready()

    def _rx_ring(self, max_n: int) -> np.ndarray:
        """Up to ``max_n`` frames out of the ring's blocks."""
        got: list[np.ndarray] = []
        total = 0
        while total < max_n:
            if not self._held and not self._take_block():
                if not got:
                    self._poll_drops_when_due()
                break
            bufs, dry = self._deliver(max_n - total)
            if len(bufs):
                got.append(bufs)
                total += len(bufs)
            if self._cur >= self._cnt:
                self._release_block()
            if dry:
                break
        if not got:
            return EMPTY
        return got[0] if len(got) == 1 else np.concatenate(got)

    def route_to(self, dst: Port) -> Step | None:
        """Phy to phy in one process goes through :class:`CutThrough`, not the pool."""
        return CutThrough(self, dst) if isinstance(dst, PhyPort) else None

    def forward_to(self, dst: PhyPort, max_n: int) -> int:
        """Receive up to ``max_n`` frames and transmit them on ``dst`` straight out of the receive
        ring; return how many were received.

        ``sendmmsg``'s iovecs point into our TPACKET_V3 ring, so the kernel copies each frame
        once, from ring to skb, and no pool buffer, gather or free is involved: the l2fwd case
        (``patch phy:0 phy:1``) saves about a third of its Python work. The kernel put each
        frame's ``virtio_net_hdr`` right in front of it, so with both sockets speaking it one
        iovec carries header and frame, aggregates and partial checksums included. Frames that
        need their VLAN tag put back, that cannot be delivered as they are, or whose metadata
        ``dst`` cannot take, go the pool path. What ``dst`` refuses is counted as its
        ``tx_drop``, as on the pool path; a refused frame costs only itself.
        """
        if self._rx is None:
            self._open_rx()
        if dst._tx is None:
            dst._open_tx()
        if self._mode != BUSY or self._trickle:
            # A trickle: what matters is latency. While the ringless socket has the frames and the
            # ring owes none from before the switch, relay them without the pool.
            if self.rx_vnet == dst.tx_vnet and self._ringless_next():
                return self._relay_to(dst, max_n)
            return forward_burst(self, dst, max_n)
        assert dst._tx is not None and dst._cut_batch is not None
        same_hdr = self.rx_vnet == dst.tx_vnet
        hdr = VNET_HDR_LEN if self.rx_vnet else 0
        moved = 0
        while moved < max_n:
            if not self._held and not self._take_block():
                if not moved:
                    self._poll_drops_when_due()
                break
            if self._vlan is not None or self._bad is not None or not same_hdr:
                bufs, dry = self._deliver(max_n - moved)
                n = len(bufs)
                if n:
                    lengths = self.pool.lengths
                    nbytes = burst_bytes(lengths.take(bufs))
                    self.counters[RX] += n
                    self.counters[RX_BYTES] += nbytes
                    sent = dst.tx_burst(bufs)
                    dst.counters[TX] += sent
                    if sent < n:
                        nbytes -= burst_bytes(lengths.take(bufs[sent:]))
                        self.pool.free(bufs[sent:])
                        dst.counters[TX_DROP] += n - sent
                    dst.counters[TX_BYTES] += nbytes
                    moved += n
                if self._cur >= self._cnt:
                    self._release_block()
                if dry:
                    break
                continue
            c = self._cur
            k = min(max_n - moved, self._cnt - c)
            addrs = self._src[c : c + k].astype(np.uint64)
            addrs += self._ring_addr - np.uint64(hdr)
            snap = self._snap[c : c + k]
            lens = snap + hdr if hdr else snap
            batch = dst._cut_batch
            done, err = batch.send(dst._tx.fileno(), addrs, lens)
            if err:
                dst.tx_error = err
            refused = len(batch.refused)
            if refused:
                dst.xstats[XS["tx_refused"]] += refused
            nbytes = burst_bytes(snap)
            self.counters[RX] += k
            self.counters[RX_BYTES] += nbytes
            dst.counters[TX] += done - refused
            if done - refused < k:
                dst.counters[TX_DROP] += k - done + refused
                nbytes = burst_bytes(snap[:done]) - burst_bytes(snap.take(batch.refused))
            dst.counters[TX_BYTES] += nbytes
            self._cur = c + k
            moved += k
            if self._cur >= self._cnt:
                self._release_block()
        if self._trickle and not self._held:
            self._go_idle()
        return moved

    def _relay_to(self, dst: PhyPort, max_n: int) -> int:
        """The ringless socket's frames straight to ``dst``'s socket, ``sendmmsg`` iovecs pointing
        into its ring (:meth:`.framering.FrameRing.relay`); counted as :meth:`forward_to` counts."""
        frames = self._frames
        assert frames is not None and dst._tx is not None and dst._cut_batch is not None
        lone = frames.lone()
        if lone is not None:
            return self._relay_one(dst, *lone)
        drops = [0, 0]
        addrs, lens, k = frames.relay(min(max_n, RELAY_CHUNK), drops)
        if drops[0] or drops[1]:
            self.counters[RX_DROP] += drops[0] + drops[1]
            self.xstats[XS["rx_runt"]] += drops[0]
            self.xstats[XS["rx_too_long"]] += drops[1]
        if not k:
            return 0
        self._relayed = True
        n = len(addrs)
        if not n:
            frames.release(k)
            return 0
        self._count_idle(n)
        hdr = frames.hdr
        ctr, dst_ctr = self.ctr, dst.ctr
        batch = dst._cut_batch
        if isinstance(lens, np.ndarray):  # a run of plain frames: vector stores
            nbytes = int(lens.sum()) - hdr * n
            done, err = batch.send(dst._tx.fileno(), addrs, lens)
        else:
            nbytes = sum(lens) - hdr * n
            done, err = batch.send_listed(dst._tx.fileno(), addrs, lens)
        frames.release(k)  # the kernel copied what it took; the rest is counted below
        ctr[RX] += n
        ctr[RX_BYTES] += nbytes
        if err:
            dst.tx_error = err
        refused = len(batch.refused)
        if refused:
            dst.xstats[XS["tx_refused"]] += refused
        dst_ctr[TX] += done - refused
        if done - refused < n:
            dst_ctr[TX_DROP] += n - done + refused
            nbytes = int(sum(lens[:done])) - int(sum(lens[i] for i in batch.refused)) - hdr * (done - refused)
        dst_ctr[TX_BYTES] += nbytes
        return n

    def _relay_one(self, dst: PhyPort, at: int, length: int) -> int:
        """:meth:`_relay_to` for a lone frame (header included: ``length`` bytes at ``at`` in the
        ring), with one plain ``send`` of a slice of the ring: on an idle panel every step runs
        cold, and this is the shortest path through the interpreter and the C library there is
        (see :meth:`.framering.FrameRing.lone`)."""
        frames = self._frames
        assert frames is not None and dst._tx is not None
        self._relayed = True
        self._count_idle(1)
        try:
            dst._tx.send(frames.view[at : at + length])
            sent = True
        except OSError as e:
            dst._send_failed(e)
            sent = False
        frames.release(1)
        nbytes = length - frames.hdr
        ctr, dst_ctr = self.ctr, dst.ctr
        ctr[RX] += 1
        ctr[RX_BYTES] += nbytes
        if not sent:
            dst_ctr[TX_DROP] += 1
            return 1
        dst_ctr[TX] += 1
        dst_ctr[TX_BYTES] += nbytes
        return 1

    def _ringless_next(self) -> bool:
        """Whether the next frames in wire order are the ringless socket's: the port is idle and
        the ring holds none from before the switch (none held, none handed over, none owed)."""
        return self._mode == IDLE and not self._held and not self._block_ready() and not self._owed()

    def _send_failed(self, e: OSError) -> None:
        """Note why a lone frame's ``send`` on this port failed: refused for itself
        (``tx_refused``), or the device full or down (``tx_error``), as :class:`SendBatch` sorts
        its errors; the caller counts the drop."""
        err = e.errno or errno.EAGAIN
        if err in FRAME_ERRORS:
            self.xstats[XS["tx_refused"]] += 1
        else:
            self.tx_error = err

    def _count_idle(self, n: int) -> None:
        """Frames came from the ringless socket: more than a trickle switches back to blocks."""
        now = time.monotonic()
        if now - self._idle_window > 0.001:
            self._idle_window, self._idle_count = now, 0
        self._idle_count += n
        if self._idle_count >= IDLE_MAX_PER_MS:
            self._go_busy()

    def fileno(self) -> int | None:
        """Readable while frames wait for us: an epoll set of the ring's socket (a block was
        handed over) and the ringless one (a frame came); opens rx on first use."""
        if self._rx is None:
            self._open_rx()
        assert self._rx is not None
        return self._rx.fileno() if self._ready is None else self._ready.fileno()

    # -- transmit --------------------------------------------------------------------------------

    def _open_tx(self) -> None:
        # Protocol 0: a send-only socket, so the kernel never queues received frames on it.
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            # Straight to the driver: no qdisc, and no copy of our frames to packet taps.
            s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, self.TX_SNDBUF)
            except PermissionError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.TX_SNDBUF)
            try:
                s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                self.tx_vnet = True
            except OSError:
                self.tx_vnet = False  # then offloads are finished in software before sending
            s.bind((self.iface, 0))
            s.setblocking(False)
        except OSError as e:
            s.close()
            raise PortError(
                f"phy:{self.uid.num}: cannot open tx on {self.iface}: {e.strerror or e}"
            ) from None
        self._tx = s
        self._batch = SendBatch(iovs=2 if self.tx_vnet else 1)
        self._cut_batch = SendBatch()

    def tx_burst(self, bufs: np.ndarray) -> int:
        n = len(bufs)
        if n == 0:
            return 0
        if self._tx is None:
            self._open_tx()
        assert self._tx is not None and self._batch is not None
        pool = self.pool
        if not self.tx_vnet:
            return self._tx_finished(bufs)
        if n == 1:
            sent = self._tx_one(bufs.item(0))
            if sent >= 0:
                return sent
        elif n <= FEW:
            sent = self._tx_few(bufs)
            if sent >= 0:
                return sent
        bi = bufs.astype(np.intp)
        word = pool.vnet_word[bi]
        bad: np.ndarray | None = None
        if _or(word):
            some = np.flatnonzero(word)
            inv = offload.invalid(pool, bufs[some])
            if inv.any():
                # Metadata the kernel would refuse, or worse, trust: never passed on.
                bad = some[inv]
                self.xstats[XS["tx_bad_vnet"]] += len(bad)
        lens = pool.lengths[bi]
        send_bufs, send_lens = bufs, lens
        if bad is not None:
            ok = np.ones(n, bool)
            ok[bad] = False
            send_pos = np.flatnonzero(ok)
            send_bufs, send_lens = bufs[send_pos], lens[send_pos]
        batch = self._batch
        done, err = batch.send_pool(
            self._tx.fileno(), self._data_addr, self.buf_size, send_bufs, send_lens, vnet_addr=self._vnet_addr
        )
        if err:
            self.tx_error = err
        refused = batch.refused
        if bad is None and not refused:
            if done:
                pool.free(bufs[:done])  # the kernel copied them into skbs
            return done
        # Some frames were not taken: sent ones first in the caller's array, the rest behind.
        if refused:
            self.xstats[XS["tx_refused"]] += len(refused)
        sent_mask = np.zeros(len(send_bufs), bool)
        sent_mask[:done] = True
        sent_mask[refused] = False
        sent_pos = send_pos[sent_mask] if bad is not None else np.flatnonzero(sent_mask)
        return self._sent_first(bufs, sent_pos)

    def _tx_one(self, b: int) -> int:
        """tx_burst for a lone frame (the idle panel's case, where every step runs cold): one
        ``sendmsg`` of its header and bytes, Python ints throughout; -1 if its metadata must be
        refused (the vector path sorts it out and counts it)."""
        assert self._tx is not None
        pool = self.pool
        ln = pool.len_mv[b]
        if invalid_buf(pool, b, ln):
            return -1
        v = b * VNET_HDR_LEN
        o = b * self.buf_size
        try:
            self._tx.sendmsg((pool.vnet_mv[v : v + VNET_HDR_LEN], pool.data_mv[o : o + ln]), (), MSG_DONTWAIT)
        except OSError as e:
            self._send_failed(e)
            return 0
        pool.free_one(b)
        return 1

    def _tx_few(self, bufs: np.ndarray) -> int:
        """tx_burst for a handful of frames (a trickle: latency), with Python ints instead of
        vector operations; -1 if one of them carries metadata to refuse (the vector path then
        sorts it out and counts it)."""
        assert self._tx is not None and self._batch is not None
        pool = self.pool
        lengths, words = pool.lengths, pool.vnet_word
        bs, data, vnet = self.buf_size, self._data_addr, self._vnet_addr
        addrs: list[int] = []
        lens: list[int] = []
        hdrs: list[int] = []
        for b in bufs.tolist():
            ln = int(lengths[b])
            if words[b] and invalid_one(*VNET_FIELDS.unpack_from(pool.vnet[b]), ln):
                return -1
            addrs.append(data + bs * b)
            lens.append(ln)
            hdrs.append(vnet + VNET_HDR_LEN * b)
        batch = self._batch
        done, err = batch.send_listed(self._tx.fileno(), addrs, lens, hdrs)
        if err:
            self.tx_error = err
        if not batch.refused:
            if done:
                pool.free(bufs[:done])
            return done
        self.xstats[XS["tx_refused"]] += len(batch.refused)
        sent_mask = np.zeros(len(bufs), bool)
        sent_mask[:done] = True
        sent_mask[batch.refused] = False
        return self._sent_first(bufs, np.flatnonzero(sent_mask))

    def _tx_finished(self, bufs: np.ndarray) -> int:
        """Transmit on a socket without virtio_net_hdr: finish offloads in software first."""
        assert self._tx is not None and self._batch is not None
        pool = self.pool
        out = offload.finish(pool, bufs, self.xstats)
        if out is bufs:
            lens = pool.lengths[bufs.astype(np.intp)]
            done, err = self._batch.send_pool(self._tx.fileno(), self._data_addr, self.buf_size, bufs, lens)
            if err:
                self.tx_error = err
            if not self._batch.refused:
                if done:
                    pool.free(bufs[:done])
                return done
            self.xstats[XS["tx_refused"]] += len(self._batch.refused)
            sent_mask = np.zeros(len(bufs), bool)
            sent_mask[:done] = True
            sent_mask[self._batch.refused] = False
            return self._sent_first(bufs, np.flatnonzero(sent_mask))
        # The burst changed (segments, drops): the originals are gone, so all of it is consumed
        # here, and what does not go is freed and counted here.
        lens = pool.lengths[out.astype(np.intp)]
        done, err = self._batch.send_pool(self._tx.fileno(), self._data_addr, self.buf_size, out, lens)
        if err:
            self.tx_error = err
        refused = len(self._batch.refused)
        self.xstats[XS["tx_refused"]] += refused
        pool.free(out)
        self.counters[TX_DROP] += len(out) - done + refused
        return len(bufs)

    # -- lifetime ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close both sockets and unmap the ring. Safe to call more than once."""
        if self._rx is not None:
            if self._switch is not None and not self._switch.cancel():
                log.warning("phy:%d: a fanout switch did not finish; closing anyway", self.uid.num)
            self._switch = None
            self.poll_drops()
            for name in ("_u8", "_u16", "_u32"):
                self.__dict__.pop(name, None)
            self._windows.clear()
            self._reset_block()
            self._mv32.release()
            if self._frames is not None:
                self._frames.close()
                self._frames = None
            # A stray view would keep the mapping alive until it goes; the socket closes anyway.
            with contextlib.suppress(BufferError):
                self._mm.close()
            self._rx.close()
            self._rx = None
            if self._idle is not None:
                self._idle.close()
                self._idle = None
            if self._ready is not None:
                self._ready.close()
                self._ready = None
            if self._switch_fd >= 0:
                os.close(self._switch_fd)
                self._switch_fd = -1
        if self._tx is not None:
            self._tx.close()
            self._tx = None
            self._batch = None
            self._cut_batch = None


@dataclass(frozen=True)
class CutThrough:
    """A worker step moving ``src`` to ``dst``, two phy ports, without the pool (see
    :meth:`PhyPort.forward_to`). Counts exactly as a :class:`~spp.engine.worker.Route` does."""

    src: PhyPort
    dst: PhyPort

    @property
    def inputs(self) -> tuple[Port, ...]:
        return (self.src,)

    def run(self, burst: int) -> int:
        # With no pool buffers at stake the burst can be a whole receive block: the Python cost
        # per call is fixed, so fewer, larger calls are what make this path cheap.
        return self.src.forward_to(self.dst, burst * 4)
