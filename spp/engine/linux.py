"""Small Linux networking helpers the port drivers and the primary need, via ioctl, socket and ctypes.

Nothing here is specific to one driver: interface lookups (index, MAC, MTU, flags), bringing a link
up and making it promiscuous (what DPDK's ``rte_eth_dev_start`` and ``rte_eth_promiscuous_enable``
do for a NIC), and :class:`SendBatch`, a ``sendmmsg(2)`` wrapper whose iovecs point straight into
the shared packet pool, so a burst reaches the kernel without a single per-packet Python step.

Errors are plain :class:`OSError` with the interface named in the message; callers turn them into
their own exception types (a port driver into ``PortError``).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import socket
import struct

import numpy as np

# <linux/sockios.h>, <linux/if.h>
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927
IFF_UP = 0x1
IFF_PROMISC = 0x100
IFNAMSIZ = 16

# <linux/if_ether.h>
ETH_HLEN = 14
VLAN_HLEN = 4
ETH_P_ALL = 0x0003
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8

# <bits/socket.h>
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
SO_ATTACH_FILTER, SO_DETACH_FILTER = 26, 27

# <linux/if_packet.h>: AF_PACKET socket options and ring headers (the phy port's two sockets)
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_COPY_THRESH = 7
PACKET_VERSION = 10
PACKET_VNET_HDR = 15
PACKET_FANOUT = 18
PACKET_QDISC_BYPASS = 20
PACKET_FANOUT_DATA = 22
PACKET_IGNORE_OUTGOING = 23
PACKET_FANOUT_CBPF = 6
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000
PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000
TPACKET_V2 = 1
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1 << 0
TP_STATUS_COPY = 1 << 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_BLK_TMO = 1 << 5  # a V3 block retired by its timer, not because it was full
TP_STATUS_VLAN_TPID_VALID = 1 << 6
UIO_MAXIOV = 1024  # the kernel clamps a sendmmsg vector to this many messages

_IFREQ = struct.Struct("16s24x")  # struct ifreq: name, then a 24-byte union
_IFREQ_SHORT = struct.Struct("16sh22x")
_IFREQ_INT = struct.Struct("16si20x")


def ifname_bytes(name: str) -> bytes:
    """``name`` as the kernel's ifr_name wants it; ValueError if no interface could be called so."""
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"/" in raw or b"\0" in raw:
        raise ValueError(f"invalid interface name {name!r} (1..{IFNAMSIZ - 1} bytes, no '/')")
    return raw


def _ioctl(name: str, request: int, arg: bytes) -> bytes:
    # Any socket reaches the netdev ioctls; an AF_INET datagram socket is the conventional one.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            return fcntl.ioctl(s.fileno(), request, arg)
        except OSError as e:
            raise OSError(e.errno, f"{name}: {e.strerror}") from None


def if_nametoindex(name: str) -> int:
    """Interface index of ``name``; OSError(ENODEV) naming the interface if it does not exist."""
    ifname_bytes(name)
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise OSError(errno.ENODEV, f"no network interface named '{name}'") from None


def interface_exists(name: str) -> bool:
    try:
        if_nametoindex(name)
    except (OSError, ValueError):
        return False
    return True


def get_mac(name: str) -> str:
    """The interface's hardware address as ``aa:bb:cc:dd:ee:ff``."""
    res = _ioctl(name, SIOCGIFHWADDR, _IFREQ.pack(ifname_bytes(name)))
    # ifr_hwaddr is a struct sockaddr: sa_family (2 bytes), then sa_data.
    return ":".join(f"{b:02x}" for b in res[18:24])


def get_mtu(name: str) -> int:
    res = _ioctl(name, SIOCGIFMTU, _IFREQ.pack(ifname_bytes(name)))
    return _IFREQ_INT.unpack(res)[1]


def get_flags(name: str) -> int:
    res = _ioctl(name, SIOCGIFFLAGS, _IFREQ.pack(ifname_bytes(name)))
    return _IFREQ_SHORT.unpack(res)[1] & 0xFFFF


def _set_flag(name: str, flag: int, on: bool) -> None:
    flags = get_flags(name)
    new = (flags | flag) if on else (flags & ~flag)
    if new != flags:
        # ifr_flags is a signed short in the kernel's struct; keep the bit pattern.
        _ioctl(
            name,
            SIOCSIFFLAGS,
            _IFREQ_SHORT.pack(ifname_bytes(name), struct.unpack("h", struct.pack("H", new))[0]),
        )


def set_link_up(name: str, up: bool = True) -> None:
    """``ip link set NAME up`` (or down)."""
    _set_flag(name, IFF_UP, up)


def is_link_up(name: str) -> bool:
    return bool(get_flags(name) & IFF_UP)


def set_promiscuous(name: str, on: bool = True) -> None:
    """Set IFF_PROMISC, as the SPP primary does for every NIC it owns.

    This flag outlives the process. A port driver that only needs promiscuity while it is open
    should prefer the PACKET_MR_PROMISC socket membership, which the kernel drops with the socket.
    """
    _set_flag(name, IFF_PROMISC, on)


def is_promiscuous(name: str) -> bool:
    return bool(get_flags(name) & IFF_PROMISC)


# -- sendmmsg -----------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
# CDLL (not PyDLL) calls drop the GIL for the duration of the syscall.
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int
#: struct iovec
IOVEC = np.dtype([("base", "<u8"), ("len", "<u8")])
#: struct mmsghdr: a struct msghdr (56 bytes on x86-64/aarch64) followed by msg_len, padded to 64.
MMSGHDR = np.dtype(
    {
        "names": ["name", "namelen", "iov", "iovlen", "control", "controllen", "flags", "len"],
        "formats": ["<u8", "<u4", "<u8", "<u8", "<u8", "<u8", "<i4", "<u4"],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 56],
        "itemsize": 64,
    }
)
if ctypes.sizeof(ctypes.c_void_p) != 8:
    raise ImportError("spp.engine.linux: the mmsghdr layout here is for 64-bit Linux")


_IOV_ONE = struct.Struct("<QQ")
_IOV_PAIR = struct.Struct("<QQQQ")

#: errors that concern one message only: the kernel will never take *that* frame (longer than
#: the MTU, a runt, offload metadata it rejects), but the ones behind it may go
FRAME_ERRORS = frozenset({errno.EINVAL, errno.EMSGSIZE})


class SendBatch:
    """Preallocated ``mmsghdr``/``iovec`` vectors for ``sendmmsg``.

    The arrays are numpy structured arrays in C layout: filling a burst is a few vectorised stores
    (addresses, lengths), and the syscall is one ctypes call. The iovecs point at memory the caller
    owns (the shared pool, a receive ring); the kernel copies each frame into an skb before
    sendmmsg returns, so the memory is free to reuse as soon as the call is back.

    ``iovs`` is the number of pieces per message: 1 (a frame), or 2 (a ``virtio_net_hdr`` from
    the pool's metadata, then the frame) for a socket with ``PACKET_VNET_HDR``.

    A frame the kernel refuses (:data:`FRAME_ERRORS`) costs only itself: sending goes on with the
    next one, and the refused positions are reported (``refused``, after each call).
    """

    def __init__(self, capacity: int = UIO_MAXIOV, iovs: int = 1) -> None:
        self.capacity = capacity
        self.iovs = iovs
        self.iov = np.zeros(capacity * iovs, IOVEC)
        self.msg = np.zeros(capacity, MMSGHDR)
        iov_addr = self.iov.ctypes.data
        self.msg["iov"] = iov_addr + IOVEC.itemsize * iovs * np.arange(capacity, dtype=np.uint64)
        self.msg["iovlen"] = iovs
        self._msg_addr = self.msg.ctypes.data
        # Per message: the frame's iovec (the last piece) and, with two pieces, the header's.
        self._base = self.iov["base"][iovs - 1 :: iovs]
        self._len = self.iov["len"][iovs - 1 :: iovs]
        if iovs == 2:
            self._hdr_base = self.iov["base"][0::2]
            self.iov["len"][0::2] = 10  # sizeof(struct virtio_net_hdr)
        #: positions (in the last call's burst) of frames the kernel refused
        self.refused: list[int] = []

    def _send_prepared(self, fd: int, n: int, flags: int, first: int = 0) -> tuple[int, int]:
        """sendmmsg the first ``n`` prepared messages: ``(consumed, errno or 0)``.

        ``consumed`` counts the messages sent *or refused*; the refused ones' positions (plus
        ``first``) are appended to ``self.refused``. sendmmsg stops at the first message that
        fails and reports only the count, dropping the reason. So after a short count, try again
        from the first unsent message: that either makes progress or fails at once with the
        errno, which tells whether the device was full (EAGAIN/ENOBUFS: stop, report it) or that
        frame was unacceptable (EINVAL/EMSGSIZE: skip it, go on).
        """
        done = 0
        while done < n:
            r = _sendmmsg(fd, self._msg_addr + MMSGHDR.itemsize * done, n - done, flags)
            if r > 0:
                done += r
                continue
            err = (ctypes.get_errno() or errno.EAGAIN) if r < 0 else errno.EAGAIN
            if err not in FRAME_ERRORS:
                return done, err
            self.refused.append(first + done)
            done += 1
        return done, 0

    def send_listed(
        self, fd: int, addrs: list[int], lengths: list[int], hdr_addrs: list[int] | None = None
    ) -> tuple[int, int]:
        """Send a handful of frames given as Python ints (``hdr_addrs``: their headers, with two
        pieces per message); returns as :meth:`send`. For one to a few frames, a few ``struct``
        stores cost less than the vector stores of :meth:`send_pool`."""
        self.refused = []
        iov = self.iov
        if self.iovs == 2:
            assert hdr_addrs is not None
            for i, (a, ln, h) in enumerate(zip(addrs, lengths, hdr_addrs, strict=True)):
                _IOV_PAIR.pack_into(iov, 2 * IOVEC.itemsize * i, h, 10, a, ln)
        else:
            for i, (a, ln) in enumerate(zip(addrs, lengths, strict=True)):
                _IOV_ONE.pack_into(iov, IOVEC.itemsize * i, a, ln)
        return self._send_prepared(fd, len(addrs), MSG_DONTWAIT)

    def send(
        self, fd: int, addrs: np.ndarray, lengths: np.ndarray, flags: int = MSG_DONTWAIT
    ) -> tuple[int, int]:
        """Send ``len(addrs)`` one-piece frames; return ``(frames consumed, errno or 0)``.

        The consumed frames are always a prefix: sent, or refused (``self.refused``). An error is
        reported only when fewer than all were consumed: EAGAIN/ENOBUFS mean "full, try later",
        ENETDOWN/ENXIO "the link is down or gone".
        """
        self.refused = []
        n = len(addrs)
        done = 0
        while done < n:
            k = min(n - done, self.capacity)
            self._base[:k] = addrs[done : done + k]
            self._len[:k] = lengths[done : done + k]
            r, err = self._send_prepared(fd, k, flags, done)
            done += r
            if err:
                return done, err
        return done, 0

    def send_pool(
        self,
        fd: int,
        data_addr: int,
        buf_size: int,
        bufs: np.ndarray,
        lengths: np.ndarray,
        flags: int = MSG_DONTWAIT,
        vnet_addr: int = 0,
    ) -> tuple[int, int]:
        """Send pool buffers ``bufs`` (lengths ``lengths``) zero-copy from Python's side.

        The address of buffer ``i`` is ``data_addr + i * buf_size``: the segment's data region is one
        contiguous mapping (a large buffer's rows included), so the kernel reads each frame
        straight out of shared memory; with two pieces per message, its ``virtio_net_hdr`` comes
        from ``vnet_addr + 10 * i``. Returns as :meth:`send`.
        """
        bufs = np.asarray(bufs, np.uint32)  # no copy for the usual uint32; keeps the products uint64
        self.refused = []
        n = len(bufs)
        done = 0
        while done < n:
            k = min(n - done, self.capacity)
            part = bufs[done : done + k]
            base = self._base[:k]
            np.multiply(part, np.uint64(buf_size), out=base)
            base += data_addr
            if self.iovs == 2:
                hdr = self._hdr_base[:k]
                np.multiply(part, np.uint64(10), out=hdr)
                hdr += vnet_addr
            self._len[:k] = lengths[done : done + k]
            r, err = self._send_prepared(fd, k, flags, done)
            done += r
            if err:
                return done, err
        return done, 0
