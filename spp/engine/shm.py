"""The shared segment: one file in ``/dev/shm`` (or hugetlbfs) that the primary creates and every
secondary maps. It plays the part of DPDK's memzones: the packet buffer pool, the rings, the port
counters and the process table all live in it, so packets and counters cross processes without
copies or messages.

Layout (every region 4 KiB-aligned, offsets recorded in the JSON header so a secondary needs no
arguments beyond the file prefix)::

    header      magic, JSON description (sizes, phy ports, primary pid)
    pool        free-stack counts (small, large) + free stack (uint32 buffer indices)
    large_stack free stack of the large buffers (the index of each one's first row)
    buf_len     uint32 per row: frame length (mbuf pkt_len)
    buf_ts      uint64 per row: receive time stamp, ns since the epoch
    buf_vnet    10 bytes per row: offload metadata as a ``struct virtio_net_hdr``
    buf_data    (nb_bufs + nb_large x large_rows) x buf_size bytes
    rings       per ring: head (byte 0), tail (byte 64), doorbell (byte 128) on their own cache
                lines, then uint32 slots
    phy_stats   uint64 [MAX_PROCS][MAX_PHYS][4]  rx, rx_drop, tx, tx_drop
    ring_stats  uint64 [MAX_PROCS][nb_rings][4]
    procs       uint64 [MAX_PROCS][4]            pid, kind, state, heartbeat

Buffers are rows of ``buf_data``. The first ``nb_bufs`` rows are the ordinary buffers; after
them come ``nb_large`` *large* buffers of ``large_rows`` consecutive rows each (GSO aggregates up
to 64 KiB, jumbo frames), named by the index of their first row. A large buffer is therefore
contiguous, its address is computed like any other's, and everything that reads only headers
(``data[bufs, :k]``) works on it unchanged; only code that copies or moves whole frames must
look at the length.

Counters are kept *per process* (one row per client id, row 0 for the primary) and summed by the
reader. Two processes forwarding through the same ring therefore never race on one counter: each
row has exactly one writer, and an aligned 8-byte store is atomic on x86-64.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"SPPPYSEG3\0\0\0\0\0\0\0"
HEADER_SIZE = 64 * 1024
MAX_PROCS = 128  # client ids 1..127; row 0 is the primary
MAX_PHYS = 32  # RTE_MAX_ETHPORTS
RING_CTL = 192  # head, tail and the doorbell (spp.engine.doorbell), each on its own cache line
PAGE = 4096
#: bytes of one large buffer: an IP datagram's 64 KiB limit plus Ethernet and two VLAN headers
LARGE_BYTES = 65536 + 64
#: struct virtio_net_hdr (<linux/virtio_net.h>), little-endian as virtio 1.0 and vnet_le have it
VNET_HDR_LEN = 10

# Counter columns, as SPP's struct stats.
RX, RX_DROP, TX, TX_DROP = range(4)

# Process table columns and values.
P_PID, P_KIND, P_STATE, P_SPARE = range(4)
STATE_FREE, STATE_STARTING, STATE_REGISTERED = 0, 1, 2
PROC_KINDS = {"primary": 1, "nfv": 2, "vf": 3, "mirror": 4, "pcap": 5, "pktgen": 6, "l2fwd": 7}


def _align(n: int, a: int = PAGE) -> int:
    return (n + a - 1) // a * a


@dataclass
class PhyInfo:
    """One ``phy:N`` port: a Linux interface the primary was told about."""

    iface: str
    mac: str = "00:00:00:00:00:00"
    driver: str = "af_packet"
    set_promisc: bool = False  # the primary turned promiscuous mode on, and turns it off at exit


@dataclass
class SegmentSpec:
    """What the primary was asked to create. Secondaries read it back from the header."""

    prefix: str = "spp"
    nb_bufs: int = 32768
    buf_size: int = 2048
    nb_rings: int = 10
    ring_size: int = 1024
    nb_large: int = 512
    phys: list[PhyInfo] = field(default_factory=list)
    primary_pid: int = 0
    pcaps: dict[str, dict[str, str]] = field(default_factory=dict)
    """Files of ``pcap:N`` named by the primary's ``--vdev net_pcapN``: ``{"N": {"rx": .., "tx": ..}}``."""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SegmentSpec:
        d = json.loads(raw)
        d["phys"] = [PhyInfo(**p) for p in d["phys"]]
        return cls(**d)


def segment_path(prefix: str, directory: str | os.PathLike[str] = "/dev/shm") -> Path:
    return Path(directory) / f"spp_{prefix}.seg"


class SegmentError(RuntimeError):
    """The shared segment is missing, foreign or of another version."""


class Segment:
    """A mapping of the shared segment, with numpy views over each region."""

    def __init__(self, path: Path, spec: SegmentSpec, mm: mmap.mmap, fd: int) -> None:
        self.path = path
        self.spec = spec
        self._mm = mm
        self.fd = fd
        s = spec
        if s.ring_size & (s.ring_size - 1):
            raise SegmentError(f"ring size {s.ring_size} is not a power of two")
        self.large_rows = large_rows(s)
        self.large_base = s.nb_bufs
        self.nb_rows = rows = s.nb_bufs + s.nb_large * self.large_rows
        off = HEADER_SIZE
        self.pool_ctl = np.ndarray((8,), np.uint64, mm, off)
        self.free_stack = np.ndarray((s.nb_bufs,), np.uint32, mm, off + 64)
        off = _align(off + 64 + 4 * s.nb_bufs)
        self.large_stack = np.ndarray((s.nb_large,), np.uint32, mm, off)
        off = _align(off + 4 * s.nb_large)
        self.buf_len = np.ndarray((rows,), np.uint32, mm, off)
        off = _align(off + 4 * rows)
        self.buf_ts = np.ndarray((rows,), np.uint64, mm, off)
        off = _align(off + 8 * rows)
        self.buf_vnet = np.ndarray((rows, VNET_HDR_LEN), np.uint8, mm, off)
        self.buf_vnet_addr = _address_of(self.buf_vnet)
        off = _align(off + VNET_HDR_LEN * rows)
        self.buf_data = np.ndarray((rows, s.buf_size), np.uint8, mm, off)
        self.buf_data_addr = _address_of(self.buf_data)
        off = _align(off + rows * s.buf_size)
        self.ring_stride = _align(RING_CTL + 4 * s.ring_size, 64)
        self.rings_offset = off
        off = _align(off + s.nb_rings * self.ring_stride)
        self.phy_stats = np.ndarray((MAX_PROCS, MAX_PHYS, 4), np.uint64, mm, off)
        off = _align(off + self.phy_stats.nbytes)
        self.ring_stats = np.ndarray((MAX_PROCS, max(s.nb_rings, 1), 4), np.uint64, mm, off)
        off = _align(off + self.ring_stats.nbytes)
        self.procs = np.ndarray((MAX_PROCS, 4), np.uint64, mm, off)
        off = _align(off + self.procs.nbytes)
        self.size = off

    # -- creation and attachment ---------------------------------------------------------------

    @staticmethod
    def required_size(spec: SegmentSpec) -> int:
        s = spec
        rows = s.nb_bufs + s.nb_large * large_rows(s)
        off = _align(HEADER_SIZE + 64 + 4 * s.nb_bufs)
        off = _align(off + 4 * s.nb_large)
        off = _align(off + 4 * rows)
        off = _align(off + 8 * rows)
        off = _align(off + VNET_HDR_LEN * rows)
        off = _align(off + rows * s.buf_size)
        off = _align(off + s.nb_rings * _align(RING_CTL + 4 * s.ring_size, 64))
        off = _align(off + MAX_PROCS * MAX_PHYS * 4 * 8)
        off = _align(off + MAX_PROCS * max(s.nb_rings, 1) * 4 * 8)
        return _align(off + MAX_PROCS * 4 * 8)

    @classmethod
    def create(cls, spec: SegmentSpec, directory: str | os.PathLike[str] = "/dev/shm") -> Segment:
        """Create (or re-create) the segment. Refuses while another live primary owns it."""
        path = segment_path(spec.prefix, directory)
        if path.exists():
            try:
                old = cls.attach(spec.prefix, directory)
            except SegmentError:
                old = None
            if old is not None:
                pid = old.spec.primary_pid
                old.close()
                if pid and pid != os.getpid() and pid_alive(pid):
                    raise SegmentError(
                        f"file prefix '{spec.prefix}' is in use by a running primary (pid {pid}); "
                        "stop it or choose another --file-prefix"
                    )
            path.unlink(missing_ok=True)
        size = cls.required_size(spec)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        raw = spec.to_json()
        if len(raw) > HEADER_SIZE - 32:
            raise SegmentError("segment description too large")
        mm[32 : 32 + len(raw)] = raw
        mm[16:24] = len(raw).to_bytes(8, "little")
        seg = cls(path, spec, mm, fd)
        seg.free_stack[:] = np.arange(spec.nb_bufs, dtype=np.uint32)
        seg.pool_ctl[0] = spec.nb_bufs
        seg.large_stack[:] = spec.nb_bufs + seg.large_rows * np.arange(spec.nb_large, dtype=np.uint32)
        seg.pool_ctl[1] = spec.nb_large
        mm[0:16] = MAGIC  # written last: a half-built segment is never taken for a good one
        return seg

    @classmethod
    def attach(cls, prefix: str, directory: str | os.PathLike[str] = "/dev/shm") -> Segment:
        path = segment_path(prefix, directory)
        try:
            # No link followed, and only our own user's (or root's) file: /dev/shm is writable by
            # everyone, and we map the segment read-write.
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SegmentError(
                f"no primary with file prefix '{prefix}' ({path} missing): start spp-primary first"
            ) from None
        except OSError as e:
            raise SegmentError(f"{path}: cannot open the segment: {e.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (os.geteuid(), 0):
            os.close(fd)
            raise SegmentError(f"{path} is not a segment of this user's primary (owner uid {st.st_uid})")
        size = st.st_size
        if size < HEADER_SIZE:
            os.close(fd)
            raise SegmentError(f"{path} is not an SPP segment")
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        if mm[0:16] != MAGIC:
            mm.close()
            os.close(fd)
            raise SegmentError(f"{path} is not an SPP segment of this version")
        n = int.from_bytes(mm[16:24], "little")
        spec = SegmentSpec.from_json(mm[32 : 32 + n])
        return cls(path, spec, mm, fd)

    def close(self) -> None:
        # Views must go before the mmap can close; callers drop their own references first.
        for name in (
            "pool_ctl",
            "free_stack",
            "large_stack",
            "buf_len",
            "buf_ts",
            "buf_vnet",
            "buf_data",
            "phy_stats",
            "ring_stats",
            "procs",
        ):
            self.__dict__.pop(name, None)
        # A view may still be alive somewhere; then the mapping simply goes with the process.
        with contextlib.suppress(BufferError):
            self._mm.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def unlink(self) -> None:
        self.path.unlink(missing_ok=True)

    # -- process table -------------------------------------------------------------------------

    def claim_process_slot(self, client_id: int, kind: str) -> None:
        """Take the row of ``client_id``; refuse if a live process holds it."""
        if not 0 <= client_id < MAX_PROCS:
            raise SegmentError(f"client id {client_id} out of range 1..{MAX_PROCS - 1}")
        row = self.procs[client_id]
        pid = int(row[P_PID])
        if pid and pid != os.getpid() and pid_alive(pid) and int(row[P_STATE]) != STATE_FREE:
            raise SegmentError(f"client id {client_id} is already used by pid {pid}")
        row[P_STATE] = STATE_STARTING
        row[P_KIND] = PROC_KINDS[kind]
        row[P_PID] = os.getpid()

    def mark_registered(self, client_id: int) -> None:
        self.procs[client_id, P_STATE] = STATE_REGISTERED

    def release_process_slot(self, client_id: int) -> None:
        if int(self.procs[client_id, P_PID]) == os.getpid():
            self.procs[client_id, P_STATE] = STATE_FREE
            self.procs[client_id, P_PID] = 0

    def clear_process_slot(self, client_id: int, pid: int) -> None:
        """Free the row of a process that died without releasing it (a launch that failed)."""
        if int(self.procs[client_id, P_PID]) == pid:
            self.procs[client_id, P_STATE] = STATE_FREE
            self.procs[client_id, P_PID] = 0

    def process_state(self, client_id: int) -> tuple[int, int]:
        """``(pid, state)`` of a slot, with dead pids reported as free."""
        pid, state = int(self.procs[client_id, P_PID]), int(self.procs[client_id, P_STATE])
        if pid and not pid_alive(pid):
            return pid, STATE_FREE
        return pid, state

    # -- ring control blocks -------------------------------------------------------------------

    def ring_views(self, ring_id: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= ring_id < self.spec.nb_rings:
            raise IndexError(ring_id)
        off = self.rings_offset + ring_id * self.ring_stride
        ctl = np.ndarray((RING_CTL // 8,), np.uint64, self._mm, off)
        slots = np.ndarray((self.spec.ring_size,), np.uint32, self._mm, off + RING_CTL)
        return ctl, slots


def large_rows(spec: SegmentSpec) -> int:
    """Rows of ``buf_size`` bytes that make one large buffer."""
    return -(-LARGE_BYTES // spec.buf_size)


def _address_of(arr: np.ndarray) -> int:
    return int(arr.__array_interface__["data"][0])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
