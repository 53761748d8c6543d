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
    phy_stats   uint64 [MAX_PROCS][MAX_PHYS][6]  rx, rx_drop, tx, tx_drop, rx_bytes, tx_bytes
    ring_stats  uint64 [MAX_PROCS][nb_rings][6]
    procs       uint64 [MAX_PROCS][4]            pid, kind, state, start time of the pid

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
import fcntl
import json
import mmap
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"SPPPYSEG4\0\0\0\0\0\0\0"
HEADER_SIZE = 64 * 1024
MAX_PROCS = 128  # client ids 1..127; row 0 is the primary
MAX_PHYS = 32  # RTE_MAX_ETHPORTS
RING_CTL = 192  # head, tail and the doorbell (spp.engine.doorbell), each on its own cache line
PAGE = 4096
#: bytes of one large buffer: an IP datagram's 64 KiB limit plus Ethernet and two VLAN headers
LARGE_BYTES = 65536 + 64
#: struct virtio_net_hdr (<linux/virtio_net.h>), little-endian as virtio 1.0 and vnet_le have it
VNET_HDR_LEN = 10

# Counter columns: SPP's struct stats, then the bytes of what rx and tx counted (frame lengths as
# they sit in the buffer: no FCS, preamble or gap), added once per burst from the lengths array.
RX, RX_DROP, TX, TX_DROP, RX_BYTES, TX_BYTES = range(6)
NB_COUNTERS = 6


def counter_fields(row: Sequence[int] | np.ndarray) -> dict[str, int]:
    """One counter row as per-port status shows it: SPP's keys in SPP's order, then the bytes."""
    return {
        "rx": int(row[RX]),
        "rx_drop": int(row[RX_DROP]),
        "tx": int(row[TX]),
        "tx_drop": int(row[TX_DROP]),
        "rx_bytes": int(row[RX_BYTES]),
        "tx_bytes": int(row[TX_BYTES]),
    }


# Process table columns and values.
P_PID, P_KIND, P_STATE, P_START = range(4)
STATE_FREE, STATE_STARTING, STATE_REGISTERED = 0, 1, 2
PROC_KINDS = {"primary": 1, "nfv": 2, "vf": 3, "mirror": 4, "pcap": 5, "pktgen": 6, "l2fwd": 7}
KIND_NAMES = {number: name for name, number in PROC_KINDS.items()}


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

    def layout_mismatch(self, wanted: SegmentSpec) -> str:
        """What differs between this segment and the one ``wanted`` asks for ("" if nothing)."""
        mine = (self.nb_rings, self.ring_size, self.nb_bufs, self.buf_size, [p.iface for p in self.phys])
        theirs = (
            wanted.nb_rings,
            wanted.ring_size,
            wanted.nb_bufs,
            wanted.buf_size,
            [p.iface for p in wanted.phys],
        )
        if mine == theirs and self.nb_large == wanted.nb_large:
            return ""
        return (
            f"{self.nb_rings} rings of {self.ring_size} slots, {self.nb_bufs} buffers of "
            f"{self.buf_size} bytes and phy ports {mine[4]} "
            f"(asked: {wanted.nb_rings} rings of {wanted.ring_size}, "
            f"{wanted.nb_bufs} buffers of {wanted.buf_size}, phy ports {theirs[4]})"
        )

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
        self.buf_data_offset = off  # where the rows lie in the file (to share them by fd)
        self.buf_data_addr = _address_of(self.buf_data)
        off = _align(off + rows * s.buf_size)
        self.ring_stride = _align(RING_CTL + 4 * s.ring_size, 64)
        self.rings_offset = off
        off = _align(off + s.nb_rings * self.ring_stride)
        self.phy_stats = np.ndarray((MAX_PROCS, MAX_PHYS, NB_COUNTERS), np.uint64, mm, off)
        off = _align(off + self.phy_stats.nbytes)
        self.ring_stats = np.ndarray((MAX_PROCS, max(s.nb_rings, 1), NB_COUNTERS), np.uint64, mm, off)
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
        off = _align(off + MAX_PROCS * MAX_PHYS * NB_COUNTERS * 8)
        off = _align(off + MAX_PROCS * max(s.nb_rings, 1) * NB_COUNTERS * 8)
        return _align(off + MAX_PROCS * 4 * 8)

    @classmethod
    def create(cls, spec: SegmentSpec, directory: str | os.PathLike[str] = "/dev/shm") -> Segment:
        """Create (or re-create) the segment. Refuses while a live process uses the old one."""
        path = segment_path(spec.prefix, directory)
        with _locked_path(path) as fd:
            if fd is not None:
                try:
                    old = cls.attach(spec.prefix, directory)
                except SegmentError:
                    old = None  # not ours, or an older version: replaced
                if old is not None:
                    pid = old.spec.primary_pid
                    live = old.live_processes()
                    old.close()
                    if (pid and pid != os.getpid() and pid_alive(pid)) or any(
                        k == "primary" for _, _, k in live
                    ):
                        raise SegmentError(
                            f"file prefix '{spec.prefix}' is in use by a running primary (pid {pid}); "
                            "stop it or choose another --file-prefix"
                        )
                    if live:
                        raise SegmentError(
                            f"file prefix '{spec.prefix}' is still used by {_describe(live)}; "
                            "stop them or choose another --file-prefix"
                        )
                path.unlink(missing_ok=True)
            return cls._create_new(path, spec)

    @classmethod
    def open_for_primary(
        cls, spec: SegmentSpec, directory: str | os.PathLike[str] = "/dev/shm"
    ) -> tuple[Segment, bool]:
        """The primary's segment: a new one, or, when secondaries still use the segment of a
        primary that died, that segment (``adopted`` True) if ``spec`` describes the same layout.

        Secondaries outlive their primary as in DPDK, whose memory outlives the primary; a new
        primary with the same prefix takes over their segment rather than pulling it from under
        them, and refuses with the reason when it cannot.
        """
        path = segment_path(spec.prefix, directory)
        with _locked_path(path) as fd:
            old = None
            if fd is not None:
                try:
                    old = cls.attach(spec.prefix, directory)
                except SegmentError:
                    old = None
            if old is not None:
                live = old.live_processes()
                primaries = [pid for _, pid, kind in live if kind == "primary"]
                if primaries:
                    old.close()
                    raise SegmentError(
                        f"file prefix '{spec.prefix}' is in use by a running primary (pid {primaries[0]}); "
                        "stop it or choose another --file-prefix"
                    )
                if live:
                    mismatch = old.spec.layout_mismatch(spec)
                    if mismatch:
                        old.close()
                        raise SegmentError(
                            f"file prefix '{spec.prefix}' is still used by {_describe(live)}, whose "
                            f"segment has {mismatch}: start the primary with the same options to take "
                            "it over, or stop those processes first"
                        )
                    old.spec.primary_pid = spec.primary_pid
                    old._write_header()
                    return old, True
                old.close()  # stale: every process that used it is gone
            path.unlink(missing_ok=True)
            return cls._create_new(path, spec), False

    @classmethod
    def _create_new(cls, path: Path, spec: SegmentSpec) -> Segment:
        size = cls.required_size(spec)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        seg = cls(path, spec, mm, fd)
        seg._write_header()
        seg.free_stack[:] = np.arange(spec.nb_bufs, dtype=np.uint32)
        seg.pool_ctl[0] = spec.nb_bufs
        seg.large_stack[:] = spec.nb_bufs + seg.large_rows * np.arange(spec.nb_large, dtype=np.uint32)
        seg.pool_ctl[1] = spec.nb_large
        mm[0:16] = MAGIC  # written last: a half-built segment is never taken for a good one
        return seg

    def _write_header(self) -> None:
        raw = self.spec.to_json()
        if len(raw) > HEADER_SIZE - 32:
            raise SegmentError("segment description too large")
        self._mm[32 : 32 + len(raw)] = raw
        self._mm[16:24] = len(raw).to_bytes(8, "little")

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
        """Take the row of ``client_id``; refuse if a live process holds it, or if the segment has
        been removed meanwhile (its last process left)."""
        if not 0 <= client_id < MAX_PROCS:
            raise SegmentError(f"client id {client_id} out of range 1..{MAX_PROCS - 1}")
        with _locked_path(self.path) as fd:
            if fd is None or os.fstat(fd).st_ino != os.fstat(self.fd).st_ino:
                raise SegmentError(f"{self.path} was removed (every process using it had exited)")
            row = self.procs[client_id]
            if self._row_alive(client_id) and int(row[P_PID]) != os.getpid():
                raise SegmentError(f"client id {client_id} is already used by pid {int(row[P_PID])}")
            row[P_STATE] = STATE_STARTING
            row[P_KIND] = PROC_KINDS[kind]
            row[P_START] = proc_start_time(os.getpid())
            row[P_PID] = os.getpid()

    def mark_registered(self, client_id: int) -> None:
        self.procs[client_id, P_STATE] = STATE_REGISTERED

    def release_process_slot(self, client_id: int) -> None:
        if int(self.procs[client_id, P_PID]) == os.getpid():
            self.procs[client_id, P_STATE] = STATE_FREE
            self.procs[client_id, P_PID] = 0

    def leave(self, client_id: int) -> bool:
        """Release our row; the last process out removes the segment. True if it did."""
        with _locked_path(self.path) as fd:
            self.release_process_slot(client_id)
            if fd is None or os.fstat(fd).st_ino != os.fstat(self.fd).st_ino:
                return False  # already removed (or replaced by a new primary's)
            if self.in_use():
                return False
            self.path.unlink(missing_ok=True)
            return True

    def clear_process_slot(self, client_id: int, pid: int) -> None:
        """Free the row of a process that died without releasing it (a launch that failed)."""
        if int(self.procs[client_id, P_PID]) == pid:
            self.procs[client_id, P_STATE] = STATE_FREE
            self.procs[client_id, P_PID] = 0

    def _row_alive(self, client_id: int) -> bool:
        row = self.procs[client_id]
        pid, state, start = int(row[P_PID]), int(row[P_STATE]), int(row[P_START])
        if not pid or state == STATE_FREE or not pid_alive(pid):
            return False
        return not start or proc_start_time(pid) == start  # not a recycled pid

    def process_state(self, client_id: int) -> tuple[int, int]:
        """``(pid, state)`` of a slot, with dead pids reported as free."""
        pid, state = int(self.procs[client_id, P_PID]), int(self.procs[client_id, P_STATE])
        if pid and not self._row_alive(client_id):
            return pid, STATE_FREE
        return pid, state

    def in_use(self) -> bool:
        """Does a live process use the segment (a listed one, or the process that created it)?"""
        creator = self.spec.primary_pid
        return bool(self.live_processes()) or bool(creator and creator != os.getpid() and pid_alive(creator))

    def live_processes(self) -> list[tuple[int, int, str]]:
        """``(client id, pid, kind)`` of every live process using the segment, primary first."""
        return [
            (cid, int(self.procs[cid, P_PID]), KIND_NAMES.get(int(self.procs[cid, P_KIND]), "process"))
            for cid in range(MAX_PROCS)
            if self._row_alive(cid)
        ]

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


def _describe(live: list[tuple[int, int, str]]) -> str:
    return ", ".join(f"{kind} {cid} (pid {pid})" if cid else f"{kind} (pid {pid})" for cid, pid, kind in live)


@contextlib.contextmanager
def _locked_path(path: Path, wait: bool = True) -> Iterator[int | None]:
    """Hold ``flock`` on the file at ``path`` (None if there is none), the lock that orders the
    segment's lifecycle: claiming a row, leaving, removing, adopting. A lock taken on a file that
    was removed meanwhile is retaken on the new one, so callers always see the current file."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            yield None
            return
        except OSError as e:
            raise SegmentError(f"{path}: cannot open the segment: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                yield fd
                return
        finally:
            os.close(fd)  # also drops the lock


def sweep_stale(directory: str | os.PathLike[str] = "/dev/shm") -> list[Path]:
    """Remove the segments whose every process is dead (all killed, none left to remove it)."""
    removed = []
    for path in sorted(Path(directory).glob("spp_*.seg")):
        prefix = path.name[len("spp_") : -len(".seg")]
        try:
            seg = Segment.attach(prefix, directory)
        except Exception:  # not ours, another version, half-written: not ours to judge
            continue
        try:
            # Without waiting: a held lock means a live user (or a stopped one, which must not
            # stall this primary's start).
            with _locked_path(path, wait=False) as fd:
                if fd is not None and os.fstat(fd).st_ino == os.fstat(seg.fd).st_ino and not seg.in_use():
                    path.unlink(missing_ok=True)
                    removed.append(path)
        except BlockingIOError:
            pass
        finally:
            seg.close()
    return removed


def proc_start_time(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (0 if unknown): a pid and its start time
    name one process, even after the pid has been recycled."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


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
