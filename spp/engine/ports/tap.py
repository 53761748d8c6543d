"""``tap:N``: a kernel TAP interface, the role of DPDK's ``net_tap`` vdev.

The interface is named from the instance's file prefix (``vtapN`` for the default prefix, see
:func:`spp.instance.tap_ifname`), so two instances never share one; the port option ``tap:N``
names it explicitly.

What the port transmits, the kernel receives on the interface; what the kernel transmits on the
interface, the port receives. The device is created if missing, or attached to if it already
exists (for instance made persistent with ``ip tuntap add mode tap``). A device the port created
disappears when the port closes, as the kernel removes non-persistent TAPs with their last fd.

The TUN/TAP character device moves one frame per ``read``/``write``; there is no batched call.
The loops below are therefore per packet by necessity, kept to one syscall and no allocation
each: reads land directly in pool buffers through memoryviews of the shared segment, and the
per-burst bookkeeping (lengths, stamps, frees) is vectorised.

Offloads: the device is opened with ``IFF_VNET_HDR``, so every frame travels with its ``struct
virtio_net_hdr`` (read into and written from the buffer's metadata, :mod:`spp.engine.offload`),
and ``TUNSETOFFLOAD`` lets the kernel hand us partial checksums and TSO/USO aggregates instead of
doing that work itself. A read lands in a pool buffer followed by the tail of a spare large
buffer: a frame longer than the pool buffer spills into it, and only then are its first
``buf_size`` bytes copied over to make the large buffer whole.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time

import numpy as np

from spp.engine import linux, offload
from spp.engine.linux import ETH_HLEN
from spp.engine.offload import XS, invalid_buf
from spp.engine.portid import PortId
from spp.engine.ports.base import NOTHING, RX_DROP, SOME, Port, PortContext, PortError
from spp.engine.shm import VNET_HDR_LEN
from spp.instance import tap_ifname

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN = 0x01, 0x02, 0x04, 0x08
TUN_F_USO4, TUN_F_USO6 = 0x20, 0x40
TUN_DEVICE = "/dev/net/tun"

EMPTY = np.empty(0, np.uint32)
# A frame the kernel refuses on its own (malformed): drop that one and go on. Anything else means
# the device cannot take frames now (down, detached): stop the burst.
_FRAME_ERRORS = frozenset({errno.EINVAL, errno.EMSGSIZE, errno.EFAULT})
#: how long the device must have been quiet (s) for :meth:`TapPort.rx_one` to hand over a frame
#: on its own: a read cannot tell whether more wait behind it, and under load one frame per
#: worker pass (instead of all that wait, per rx_burst) cost a TCP flow a third of its rate
QUIET = 0.001


class TapPort(Port):
    """``tap:N`` on interface ``ctx.options["tap:N"]``, or the instance's default name."""

    needs_polling = False

    def __init__(self, uid: PortId, ctx: PortContext) -> None:
        super().__init__(uid, ctx)
        name = ctx.options.get(f"tap:{uid.num}") or tap_ifname(ctx.seg.spec.prefix, uid.num)
        try:
            raw = linux.ifname_bytes(name)
        except ValueError as e:
            raise PortError(f"tap:{uid.num}: {e}") from None
        self.existed = linux.interface_exists(name)
        try:
            fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise PortError(f"tap:{uid.num}: cannot open {TUN_DEVICE}: {e.strerror}") from None
        try:
            flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
            res = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", raw, flags))
        except OSError as e:
            os.close(fd)
            raise PortError(
                f"tap:{uid.num}: cannot attach TAP device '{name}': {_why(e, self.existed)}"
            ) from None
        # What we take from the kernel: partial checksums and TCP/UDP aggregates (USO needs 6.2+).
        base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
        for offloads in (base | TUN_F_USO4 | TUN_F_USO6, base, 0):
            try:
                fcntl.ioctl(fd, TUNSETOFFLOAD, offloads)
                break
            except OSError:
                continue
        self.iface = res[:16].rstrip(b"\0").decode()
        try:
            linux.set_link_up(self.iface)
            self.mac = linux.get_mac(self.iface)
        except OSError as e:
            os.close(fd)
            raise PortError(f"tap:{uid.num}: cannot bring up {self.iface}: {e.strerror}") from None
        self._fd: int | None = fd
        self.buf_size = ctx.seg.spec.buf_size
        # One flat byte view of the pool: a frame's buffer is a slice of it, so read/write touch
        # the shared segment directly with no intermediate bytes object.
        self._mv: memoryview | None = memoryview(self.pool.data.reshape(-1))
        self._vmv: memoryview | None = memoryview(self.pool.vnet.reshape(-1))
        self._spare = -1  # a large buffer whose tail catches frames longer than a pool buffer
        self._adopted: list[int] = []  # spares that caught a frame in the current burst
        #: the errno that ended the last burst early, for diagnostics only
        self.last_error = 0
        # When the device last gave a frame (monotonic s): rx_one leaves frames to rx_burst
        # until it has been QUIET for a while.
        self._last_rx = 0.0
        self.quiet = QUIET

    def _spare_tail(self) -> list[memoryview]:
        """The iovec that catches a frame's bytes beyond the pool buffer (none if no large buffer
        is free: such a frame is then cut short, and dropped)."""
        if self._spare < 0:
            got = self.pool.alloc_large(1)
            if not len(got):
                return []
            self._spare = int(got[0])
        assert self._mv is not None
        o = self._spare * self.buf_size
        return [self._mv[o + self.buf_size : o + self.pool.large_size]]

    def rx_burst(self, max_n: int) -> np.ndarray:
        fd, mv, vmv = self._fd, self._mv, self._vmv
        if fd is None or mv is None or vmv is None or max_n <= 0:
            return EMPTY
        bufs = self.pool.alloc(max_n, plain=False)
        if not len(bufs):
            return EMPTY  # frames wait in the device queue; the kernel drops when it is full
        bs = self.buf_size
        readv = os.readv
        lens: list[int] = []
        append = lens.append
        tail = self._spare_tail()
        long_at: list[int] = []
        try:
            for b in bufs.tolist():
                o = b * bs
                v = b * VNET_HDR_LEN
                n = readv(fd, [vmv[v : v + VNET_HDR_LEN], mv[o : o + bs], *tail])
                append(n - VNET_HDR_LEN)
                if n - VNET_HDR_LEN > bs and tail:
                    long_at.append(len(lens) - 1)
                    self._adopt_spare(b)
                    tail = self._spare_tail()
        except BlockingIOError:
            pass
        except OSError as e:
            self.last_error = e.errno or 0  # detached or deleted under us: report nothing more
        n = len(lens)
        if n:
            self._last_rx = time.monotonic()
        if n < len(bufs):
            self.pool.free(bufs[n:])
            bufs = bufs[:n]
        if not n:
            return EMPTY
        ln = np.array(lens, np.int64)
        if long_at:
            # Those frames now live in the large buffers they spilled into; their pool buffers go.
            pos = np.array(long_at, np.intp)
            small = bufs[pos].copy()
            bufs[pos] = self._adopted[: len(pos)]
            self._adopted = self._adopted[len(pos) :]
            self.pool.free(small)
        # The TAP reports a frame's full length even when it had to cut it to fit our buffer.
        runt = ln < ETH_HLEN
        over = (ln > self.pool.capacity(bufs)) | runt
        if over.any():
            self.counters[RX_DROP] += int(over.sum())
            self.xstats[XS["rx_runt"]] += int(np.count_nonzero(runt))
            self.xstats[XS["rx_too_long"]] += int(np.count_nonzero(over & ~runt))
            self.pool.free(bufs[over])
            bufs, ln = bufs[~over], ln[~over]
        self.pool.lengths[bufs] = ln
        self.pool.stamps[bufs] = time.time_ns()  # the TAP carries no arrival time; this is close
        return bufs

    def rx_one(self) -> int:
        """The first frame after a quiet spell (an idle panel's ping; see :meth:`Port.rx_one`),
        read straight into a buffer with Python ints only; SOME while frames keep coming."""
        fd, mv, vmv = self._fd, self._mv, self._vmv
        now = time.monotonic()
        if now - self._last_rx < self.quiet or fd is None or mv is None or vmv is None:
            return SOME
        pool = self.pool
        b = pool.alloc_one()
        if b < 0:
            return SOME  # rx_burst finds the pool empty too, and leaves frames in the device
        bs = self.buf_size
        o, v = b * bs, b * VNET_HDR_LEN
        tail = self._spare_tail()
        try:
            n = os.readv(fd, [vmv[v : v + VNET_HDR_LEN], mv[o : o + bs], *tail]) - VNET_HDR_LEN
        except OSError as e:
            pool.free_one(b)
            if not isinstance(e, BlockingIOError):
                self.last_error = e.errno or 0
            return NOTHING
        self._last_rx = now
        capacity = bs
        if n > bs and tail:
            self._adopt_spare(b)
            pool.free_one(b)
            b, capacity = self._adopted.pop(), pool.large_size
        if n < ETH_HLEN or n > capacity:
            self.ctr[RX_DROP] += 1
            self.xstats[XS["rx_runt" if n < ETH_HLEN else "rx_too_long"]] += 1
            pool.free_one(b)
            return NOTHING
        pool.len_mv[b] = n
        pool.stamp_mv[b] = time.time_ns()
        return b

    def tx_one(self, buf: int) -> int:
        """One ``writev`` of a lone frame, Python ints only; a frame whose metadata or length
        must be refused goes the burst way, which counts why."""
        fd, mv, vmv = self._fd, self._mv, self._vmv
        pool = self.pool
        ln = pool.len_mv[buf]
        if fd is None or mv is None or vmv is None or ln < ETH_HLEN or invalid_buf(pool, buf, ln):
            return super().tx_one(buf)
        o, v = buf * self.buf_size, buf * VNET_HDR_LEN
        try:
            os.writev(fd, [vmv[v : v + VNET_HDR_LEN], mv[o : o + ln]])
        except OSError as e:
            self.last_error = e.errno or 0
            if e.errno not in _FRAME_ERRORS:
                return 0  # the device cannot take frames now: the caller frees and counts it
            self.xstats[XS["tx_refused"]] += 1
            return 0
        pool.free_one(buf)
        return 1

    def _adopt_spare(self, b: int) -> None:
        """Frame read into ``b`` spilled into the spare: make the spare whole and take it."""
        pool = self.pool
        spare = self._spare
        pool.data[spare] = pool.data[b]
        pool.vnet[spare] = pool.vnet[b]
        self._adopted = [*self._adopted, spare]
        self._spare = -1

    def tx_burst(self, bufs: np.ndarray) -> int:
        fd, mv, vmv = self._fd, self._mv, self._vmv
        n = len(bufs)
        if fd is None or mv is None or vmv is None or n == 0:
            return 0
        pool = self.pool
        word = pool.vnet_word[bufs]
        bad: set[int] = set()
        if word.any():
            some = np.flatnonzero(word)
            inv = offload.invalid(pool, bufs[some])
            if inv.any():
                bad = set(bufs[some[inv]].tolist())
                self.xstats[XS["tx_bad_vnet"]] += len(bad)
        bs = self.buf_size
        writev = os.writev
        dropped: list[int] = []  # positions of frames not sent for themselves (runt, refused)
        i = 0
        for b, ln in zip(bufs.tolist(), pool.lengths[bufs].tolist(), strict=True):
            if ln < ETH_HLEN or b in bad:
                dropped.append(i)  # a runt is no Ethernet frame; the TAP would refuse it anyway
            else:
                o = b * bs
                v = b * VNET_HDR_LEN
                try:
                    writev(fd, [vmv[v : v + VNET_HDR_LEN], mv[o : o + ln]])
                except BlockingIOError:
                    break
                except OSError as e:
                    self.last_error = e.errno or 0
                    if e.errno not in _FRAME_ERRORS:
                        break
                    dropped.append(i)
                    self.xstats[XS["tx_refused"]] += 1
            i += 1
        if dropped:
            # The frames that went first, the ones that did not behind them: the caller frees
            # and counts those as tx_drop, once each, and none of them as sent.
            sent = np.ones(i, bool)
            sent[dropped] = False
            return self._sent_first(bufs, np.flatnonzero(sent))
        if i:
            pool.free(bufs[:i])  # written frames were copied into skbs
        return i

    def fileno(self) -> int | None:
        return self._fd

    def close(self) -> None:
        """Release the device fd (a TAP this port created goes away with it). Idempotent."""
        if self._spare >= 0:
            self.pool.free(np.array([self._spare], np.uint32))
            self._spare = -1
        if self._adopted:
            self.pool.free(np.array(self._adopted, np.uint32))
            self._adopted = []
        if self._vmv is not None:
            self._vmv.release()
            self._vmv = None
        if self._mv is not None:
            self._mv.release()
            self._mv = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _why(e: OSError, existed: bool) -> str:
    if e.errno == errno.EBUSY:
        return "it is in use by another process"
    if e.errno == errno.EINVAL and existed:
        return "an interface of that name exists and is not a TAP device"
    if e.errno == errno.EPERM:
        return "permission denied (needs CAP_NET_ADMIN)"
    return e.strerror or str(e)
