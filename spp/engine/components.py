"""spp_vf's and spp_mirror's components, and the configuration that wires them at run time.

SPP's first spp_vf wired classifier, forwarders and merger statically from a file, so an unused
component held its core and two VMs could not be chained through a ring without a restart. SPP
then made the wiring dynamic (the seed note behind spec §4): the process starts with its lcores
and nothing else, and ``component start``, ``port add`` and ``classifier_table add`` build the
graph while traffic flows. This module is that graph.

Components (spec §4.1, §5):

==========  ===========  ==========  ===================  ===========================================
type        rx ports     tx ports    runs when            does
==========  ===========  ==========  ===================  ===========================================
forward     <= 1         <= 1        1 rx and 1 tx        rx -> tx
merge       <= 32        <= 1        >= 1 rx and 1 tx     every rx, in the order added -> tx
classifier  <= 1         <= 4096     1 rx, >= 1 tx and    by destination MAC and VLAN
                                     >= 1 table entry     (:mod:`spp.engine.classifier`)
mirror      <= 1         <= 2        1 rx and 2 tx        rx -> tx 1, a deep copy -> tx 2
==========  ===========  ==========  ===================  ===========================================

The run conditions are those of SPP's code, not of its docs (which asked for two rx ports of a
merge and two tx ports of a classifier): a merge of one input is a forwarder, and there is no
reason to hold packets back from it. Until a component can run it is not polled at all, and its
packets wait in their ring or interface.

**Two-phase update** (spec §4.5). A command never edits what a worker runs. It builds a new
:class:`Config` (immutable), checks it, opens the ports it needs, builds new immutable steps for
each worker lcore whose part changed, and :meth:`~spp.engine.worker.Worker.publish` es them. The
worker adopts a plan between two bursts, and every burst is finished (sent or freed) within its
pass, so no packet is ever classified by half an old and half a new table and none is held
across the switch. SPP's double-buffered "update side / reference side" does exactly this with
two copies and a flag per lcore; a new object per change is the same thing without the copying
back. Only after every affected worker has switched are ports it no longer uses closed and the
command answered. If any check fails, nothing has been published and the running configuration
is untouched.

**Threads and pools.** Each worker lcore has its own thread, its own :class:`BufferPool` handle
(pool handles are per thread) and its own port objects opened with that pool. A port used by
components on two lcores (phy:0 as rx of a classifier on lcore 2 and tx of a merge on lcore 3)
is opened once per lcore; the phy driver opens sockets lazily, so each side holds only the
socket of its own direction. Phy and ring counters stay bound to this process's row of the
segment (rx written by the receiving lane, tx by the sending one), so the primary reports them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from spp.engine.classifier import DROP, FLOOD, UNTAGGED, ClassifierTable, Entry, FrameWords
from spp.engine.offload import xstats_dict
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId
from spp.engine.ports import Port, PortContext, PortError, open_port
from spp.engine.ports.base import (
    NOTHING,
    RX,
    RX_BYTES,
    TX,
    TX_BYTES,
    TX_DROP,
    burst_bytes,
    count_rx_one,
    forward_one,
    send_one,
)
from spp.engine.shm import NB_COUNTERS, Segment, counter_fields
from spp.engine.vlan import VlanOp, rows
from spp.engine.worker import DEFAULT_BURST, SPIN_SECONDS, Worker

log = logging.getLogger(__name__)

FORWARD, MERGE, CLASSIFIER, MIRROR = "forward", "merge", "classifier", "mirror"
VF_KINDS = (FORWARD, MERGE, CLASSIFIER)
MIRROR_KINDS = (MIRROR,)
#: (max rx ports, max tx ports) per component type.
LIMITS = {FORWARD: (1, 1), MERGE: (32, 1), CLASSIFIER: (1, 4096), MIRROR: (1, 2)}
RX_DIR, TX_DIR = "rx", "tx"

# Columns of a component's counters.
C_RX, C_TX, C_TX_DROP, C_DROP = range(4)
EMPTY = np.empty(0, np.uint32)
NO_VLAN = VlanOp()


class ConfigError(Exception):
    """A refused command. ``param`` is SPP's name of the offending parameter (``Invalid value
    (param)``), or ``None`` for a command that parsed but cannot be executed (``error occur``)."""

    def __init__(self, reason: str, param: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.param = param


# -- configuration (immutable) -----------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    uid: PortId
    vlan: VlanOp = NO_VLAN


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    kind: str
    lcore: int
    rx: tuple[Attachment, ...] = ()
    tx: tuple[Attachment, ...] = ()

    def ports(self, direction: str) -> tuple[Attachment, ...]:
        return self.rx if direction == RX_DIR else self.tx

    def find(self, direction: str, uid: PortId) -> int:
        for i, a in enumerate(self.ports(direction)):
            if a.uid == uid:
                return i
        return -1


@dataclass(frozen=True)
class Config:
    components: tuple[ComponentSpec, ...] = ()
    #: the classifier table: one entry per port at most, in the order they were added
    entries: tuple[tuple[PortId, Entry], ...] = ()

    def component(self, name: str) -> ComponentSpec | None:
        return next((c for c in self.components if c.name == name), None)

    def with_component(self, spec: ComponentSpec) -> Config:
        comps = tuple(spec if c.name == spec.name else c for c in self.components)
        return replace(self, components=comps)

    @cached_property
    def _entry_map(self) -> dict[PortId, Entry]:
        return dict(self.entries)

    def entry_of(self, uid: PortId) -> Entry | None:
        return self._entry_map.get(uid)

    def table_of(self, spec: ComponentSpec) -> list[tuple[int, Entry]]:
        """The entries of a classifier's tx ports, as (tx index, entry)."""
        entries = self._entry_map
        return [(i, entries[a.uid]) for i, a in enumerate(spec.tx) if a.uid in entries]


def runnable(spec: ComponentSpec, config: Config) -> bool:
    """SPP's run conditions (see the module docstring)."""
    nrx, ntx = len(spec.rx), len(spec.tx)
    if spec.kind == FORWARD:
        return nrx == 1 and ntx == 1
    if spec.kind == MERGE:
        return nrx >= 1 and ntx == 1
    if spec.kind == CLASSIFIER:
        return nrx == 1 and ntx >= 1 and bool(config.table_of(spec))
    if spec.kind == MIRROR:
        return nrx == 1 and ntx == 2
    return False


# -- the data path: steps a worker runs ----------------------------------------------------------


class PortEnd:
    """A port as one component uses it in one direction: the port plus that direction's VLAN op."""

    __slots__ = ("data", "free", "lengths", "pool", "port", "vlan")

    def __init__(self, port: Port, vlan: VlanOp, pool: BufferPool) -> None:
        self.port = port
        self.pool = pool
        self.vlan = vlan if vlan.active else None
        self.data = pool.data
        self.lengths = pool.lengths
        self.free = pool.free

    def receive(self, burst: int, ctr: np.ndarray) -> np.ndarray:
        """A burst from the port, VLAN op applied; counts rx (port and component)."""
        bufs = self.port.rx_burst(burst)
        n = len(bufs)
        if n:
            port_ctr = self.port.counters
            port_ctr[RX] += n
            port_ctr[RX_BYTES] += burst_bytes(self.lengths.take(bufs))
            ctr[C_RX] += n
            if self.vlan is not None:
                bufs = self._edit(bufs, ctr)
        return bufs

    def send(self, bufs: np.ndarray, ctr: np.ndarray) -> int:
        """VLAN op, then transmit; free and count what was refused. Returns how many were sent
        (the caller adds them to its component's ``tx``)."""
        if self.vlan is not None:
            bufs = self._edit(bufs, ctr)
        n = len(bufs)
        if n == 0:
            return 0
        port = self.port
        lengths = self.lengths
        nbytes = burst_bytes(lengths.take(bufs))  # before tx: what the port took is not ours
        sent = port.tx_burst(bufs)
        port_ctr = port.counters
        port_ctr[TX] += sent
        if sent < n:
            nbytes -= burst_bytes(lengths.take(bufs[sent:]))
            self.free(bufs[sent:])
            port_ctr[TX_DROP] += n - sent
            ctr[C_TX_DROP] += n - sent
        port_ctr[TX_BYTES] += nbytes
        return sent

    def _edit(self, bufs: np.ndarray, ctr: np.ndarray) -> np.ndarray:
        assert self.vlan is not None
        refused = self.vlan.apply(self.data, self.lengths, bufs, self.pool)
        if len(refused):
            self.free(refused)
            ctr[C_DROP] += len(refused)
            bufs = bufs[~np.isin(bufs, refused)]
        return bufs


def copy_frames(pool: BufferPool, src: np.ndarray) -> np.ndarray:
    """Deep copies of ``src`` in new buffers, offload metadata included (fewer, a prefix, if the
    pool runs dry). A frame in a large buffer is copied into a large buffer, one copy each."""
    if len(src) and int(src.max()) >= pool.large_base:
        return _copy_mixed(pool, src)
    copies = pool.alloc(len(src), plain=False)
    m = len(copies)
    if m:
        s = src[:m].astype(np.intp)
        c = copies.astype(np.intp)
        lens = pool.lengths[s]
        frames = rows(pool.data, 0, int(lens.max()))
        frames[c] = frames[s]
        pool.lengths[c] = lens
        pool.stamps[c] = pool.stamps[s]
        pool.vnet[c] = pool.vnet[s]
    return copies


def _copy_mixed(pool: BufferPool, src: np.ndarray) -> np.ndarray:
    big = src >= pool.large_base
    big_pos = np.flatnonzero(big)
    large = pool.alloc_large(len(big_pos))
    m = len(src) if len(large) == len(big_pos) else int(big_pos[len(large)])
    small_src = src[:m][~big[:m]]
    small = copy_frames(pool, small_src) if len(small_src) else np.empty(0, np.uint32)
    if len(small) < len(small_src):
        m = min(m, int(np.flatnonzero(~big)[len(small)]))
    keep_large = int(np.searchsorted(big_pos, m))
    pool.free(large[keep_large:])
    pool.free(small[int(np.count_nonzero(~big[:m])) :])
    out = np.empty(m, np.uint32)
    out[~big[:m]] = small[: int(np.count_nonzero(~big[:m]))]
    lb, ls = large[:keep_large], src[big_pos[:keep_large]]
    out[big_pos[:keep_large]] = lb
    for d, s in zip(lb.tolist(), ls.tolist(), strict=True):
        pool.frame(d, int(pool.lengths[s]))[:] = pool.frame(s)
    if len(lb):
        pool.lengths[lb] = pool.lengths[ls]
        pool.stamps[lb] = pool.stamps[ls]
        pool.vnet[lb] = pool.vnet[ls]
    return out


def counter_view(ctr: np.ndarray) -> memoryview:
    """A component's counters as Python ints, for the lone-packet path (:meth:`Port.rx_one`)."""
    return memoryview(ctr).cast("B").cast("Q")


def forward_lone(rx: PortEnd, tx: PortEnd, one: int, ctr: memoryview) -> None:
    """A lone packet from ``rx`` to ``tx`` (neither edits VLAN tags), counted on the ports and
    in the component's counters ``ctr`` as a burst of one would be."""
    ctr[C_RX] += 1
    ctr[C_TX if forward_one(rx.port, tx.port, one) else C_TX_DROP] += 1


class OneInputStep:
    """A component with one rx port. Each pass asks the port for a lone packet first
    (:meth:`Port.rx_one`), which :meth:`_one` moves with Python ints only, unless a VLAN op
    applies (``lone`` false); otherwise :meth:`_burst` takes a burst."""

    __slots__ = ("ctr", "ctr_view", "lone", "rx")

    def __init__(self, rx: PortEnd, ctr: np.ndarray, lone: bool) -> None:
        self.rx, self.ctr, self.lone = rx, ctr, lone
        self.ctr_view = counter_view(ctr)

    @property
    def inputs(self) -> tuple[Port, ...]:
        return (self.rx.port,)

    def run(self, burst: int) -> int:
        if self.lone:
            one = self.rx.port.rx_one()
            if one >= 0:
                self._one(one)
                return 1
            if one == NOTHING:
                return 0
        return self._burst(burst)

    def _one(self, one: int) -> None:
        raise NotImplementedError

    def _burst(self, burst: int) -> int:
        raise NotImplementedError


class ForwardStep(OneInputStep):
    __slots__ = ("tx",)

    def __init__(self, rx: PortEnd, tx: PortEnd, ctr: np.ndarray) -> None:
        super().__init__(rx, ctr, rx.vlan is None and tx.vlan is None)
        self.tx = tx

    def _one(self, one: int) -> None:
        forward_lone(self.rx, self.tx, one, self.ctr_view)

    def _burst(self, burst: int) -> int:
        bufs = self.rx.receive(burst, self.ctr)
        if len(bufs) == 0:
            return 0
        self.ctr[C_TX] += self.tx.send(bufs, self.ctr)
        return len(bufs)


class MergeStep:
    __slots__ = ("ctr", "ctr_view", "lone", "rxs", "tx")

    def __init__(self, rxs: tuple[PortEnd, ...], tx: PortEnd, ctr: np.ndarray) -> None:
        self.rxs, self.tx, self.ctr = rxs, tx, ctr
        self.ctr_view = counter_view(ctr)
        # per rx: whether its lone packets may skip numpy (neither end edits VLAN tags)
        self.lone = tuple(rx.vlan is None and tx.vlan is None for rx in rxs)

    @property
    def inputs(self) -> tuple[Port, ...]:
        return tuple(r.port for r in self.rxs)

    def run(self, burst: int) -> int:
        moved = sent = 0
        ctr = self.ctr
        for rx, lone in zip(self.rxs, self.lone, strict=True):  # in the order added, as SPP's merger
            if lone:
                one = rx.port.rx_one()
                if one >= 0:
                    forward_lone(rx, self.tx, one, self.ctr_view)
                    moved += 1
                    continue
                if one == NOTHING:
                    continue
            bufs = rx.receive(burst, ctr)
            if len(bufs):
                moved += len(bufs)
                sent += self.tx.send(bufs, ctr)
        if moved:
            ctr[C_TX] += sent
        return moved


class MirrorStep(OneInputStep):
    """Every packet to the first tx port, a deep copy (new buffer) to the second.

    SPP's default build shares the data between the two (``rte_pktmbuf_clone``), so an edit of
    one output showed in the other; its docs recommend deep copy whenever the copies may be
    modified. Copies here are always deep: a copy is a buffer of its own.
    """

    __slots__ = ("pool", "tx1", "tx2")

    def __init__(self, rx: PortEnd, tx1: PortEnd, tx2: PortEnd, ctr: np.ndarray, pool: BufferPool) -> None:
        super().__init__(rx, ctr, rx.vlan is None and tx1.vlan is None and tx2.vlan is None)
        self.tx1, self.tx2, self.pool = tx1, tx2, pool

    def _burst(self, burst: int) -> int:
        ctr = self.ctr
        bufs = self.rx.receive(burst, ctr)
        n = len(bufs)
        if n == 0:
            return 0
        copies = copy_frames(self.pool, bufs)
        if len(copies) < n:
            ctr[C_DROP] += n - len(copies)  # the pool ran dry: those copies are missing
        # Copies first, as SPP; each output frees what it refused, independently of the other.
        sent = self.tx2.send(copies, ctr) if len(copies) else 0
        ctr[C_TX] += sent + self.tx1.send(bufs, ctr)
        return n

    def _one(self, one: int) -> None:
        """A lone packet (:meth:`Port.rx_one`), mirrored as a burst of one would be, with Python
        ints only (a large buffer's copy goes the burst way)."""
        pool, ctr = self.pool, self.ctr_view
        nbytes = count_rx_one(self.rx.port, one)
        ctr[C_RX] += 1
        if one < pool.large_base:
            copy = pool.copy_one(one)
        else:
            copies = copy_frames(pool, np.array((one,), np.uint32))
            copy = int(copies[0]) if len(copies) else -1
        if copy < 0:
            ctr[C_DROP] += 1  # the pool ran dry: this copy is missing
        else:
            ctr[C_TX if send_one(self.tx2.port, copy, nbytes) else C_TX_DROP] += 1
        ctr[C_TX if send_one(self.tx1.port, one, nbytes) else C_TX_DROP] += 1


class ClassifierStep(OneInputStep):
    """Classify each burst with one table lookup and send one burst per destination port.

    Every numpy call costs a microsecond or two whatever its size, so the common case (all
    frames untagged and known) is kept to about fifteen of them per burst: two gathers of header
    words, the hash lookup, a radix sort of the small destination numbers, one transmit per port.
    """

    __slots__ = ("frames", "pool", "table", "txs")

    def __init__(
        self,
        rx: PortEnd,
        txs: tuple[PortEnd, ...],
        table: ClassifierTable,
        ctr: np.ndarray,
        pool: BufferPool,
    ) -> None:
        # (a lone frame's way out is checked per frame: see _one)
        super().__init__(rx, ctr, rx.vlan is None)
        self.txs, self.table, self.pool = txs, table, pool
        self.frames = FrameWords.of(pool.data)

    def _burst(self, burst: int) -> int:
        bufs = self.rx.receive(burst, self.ctr)
        if len(bufs) == 0:
            return 0
        return self._classify(bufs)

    def _one(self, one: int) -> None:
        """A lone frame: untagged to a MAC of the table (a ping's, an ARP reply's), looked up
        and sent with Python ints only (:meth:`Port.rx_one`); anything else (tagged, unknown,
        broadcast, a VLAN op on its way out) as a burst of one."""
        pool = self.pool
        nbytes = count_rx_one(self.rx.port, one)
        self.ctr_view[C_RX] += 1
        at = one * pool.buf_size
        head = pool.data_mv[at : at + 14]
        if nbytes >= 14 and head[12:14] != b"\x81\x00":
            p = self.table.untagged.get(int.from_bytes(head[:6], "little"))
            if p is not None and self.txs[p].vlan is None:
                self.ctr_view[C_TX if send_one(self.txs[p].port, one, nbytes) else C_TX_DROP] += 1
                return
        self._classify(np.array((one,), np.uint32))

    def _classify(self, bufs: np.ndarray) -> int:
        """Classify and send a received burst (counted as received); returns its size."""
        ctr = self.ctr
        n = len(bufs)
        dest, clean, vid = self.table.classify_frames(self.frames, bufs.astype(np.intp))
        txs = self.txs
        if clean:
            bufs = bufs[np.argsort(dest, kind="stable")]  # by port, in arrival order (radix sort)
        else:
            dest, bufs = self._expand(bufs, dest, vid)  # sorted by port already
            if len(bufs) == 0:
                return n
        counts = np.bincount(dest, minlength=len(txs))
        # One transmit per destination port that has packets.
        sent = start = 0
        if len(txs) <= 32:
            for p, c in enumerate(counts.tolist()):
                if c:
                    sent += txs[p].send(bufs[start : start + c], ctr)
                    start += c
        else:
            used = np.flatnonzero(counts)
            for p, end in zip(used.tolist(), np.cumsum(counts[used]).tolist(), strict=True):
                sent += txs[p].send(bufs[start:end], ctr)
                start = end
        ctr[C_TX] += sent
        return n

    def _expand(
        self, bufs: np.ndarray, dest: np.ndarray, vid: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Drop what has no destination, copy floods; return (port, buffer) sorted by port and
        then by arrival, so that each port gets its packets in wire order."""
        ctr = self.ctr
        dropped = dest == DROP
        if dropped.any():
            self.pool.free(bufs[dropped])
            ctr[C_DROP] += int(np.count_nonzero(dropped))
        pos = np.flatnonzero(dest >= 0)
        flood = np.flatnonzero(dest == FLOOD)
        if len(flood) == 0:
            order = np.argsort(dest[pos], kind="stable")
            return dest[pos][order], bufs[pos][order]
        if vid is None:
            vid = np.full(len(bufs), UNTAGGED, np.int64)
        parts_pos, parts_port, parts_buf = [pos], [dest[pos].astype(np.int64)], [bufs[pos]]
        fvid = vid[flood]
        vids = np.unique(fvid).tolist()
        for v in vids:
            sel = flood if len(vids) == 1 else flood[fvid == v]
            targets = self.table.flood_targets(v)
            if not targets:  # cannot happen (a VID without a table is not FLOOD); be safe
                self.pool.free(bufs[sel])
                ctr[C_DROP] += len(sel)
                continue
            for t in targets[:-1]:
                copies = copy_frames(self.pool, bufs[sel])
                m = len(copies)
                if m < len(sel):
                    ctr[C_DROP] += len(sel) - m
                parts_pos.append(sel[:m])
                parts_port.append(np.full(m, t, np.int64))
                parts_buf.append(copies)
            parts_pos.append(sel)
            parts_port.append(np.full(len(sel), targets[-1], np.int64))
            parts_buf.append(bufs[sel])
        all_pos = np.concatenate(parts_pos)
        all_port = np.concatenate(parts_port)
        order = np.argsort(all_port * len(bufs) + all_pos)
        return all_port[order], np.concatenate(parts_buf)[order]


Step = ForwardStep | MergeStep | MirrorStep | ClassifierStep


# -- the manager: commands -> config -> published plans ------------------------------------------


@dataclass
class _Lane:
    """One worker lcore: its thread, pool handle and the ports opened for it."""

    lcore: int
    pool: BufferPool
    ctx: PortContext
    worker: Worker
    ports: dict[PortId, Port] = field(default_factory=dict)
    signature: object = None


class ComponentManager:
    """The components of one spp_vf / spp_mirror process and the workers that run them."""

    def __init__(
        self,
        seg: Segment,
        client_id: int,
        lcores: Sequence[int],
        kinds: tuple[str, ...],
        burst: int = DEFAULT_BURST,
        vhost_client: bool = False,
        process_name: str = "spp_vf",
        options: dict[str, str] | None = None,
        spin: float = SPIN_SECONDS,
    ) -> None:
        self.seg = seg
        self.client_id = client_id
        self.master = lcores[0]
        self.worker_lcores = list(lcores[1:])
        self.kinds = kinds
        self.config = Config()
        self.counters: dict[str, np.ndarray] = {}
        self.created: set[PortId] = set()  # ring/vhost ports ever attached (SPP lists them)
        self._lock = threading.Lock()
        self.lanes: dict[int, _Lane] = {}
        for lcore in self.worker_lcores:
            pool = BufferPool(seg)
            ctx = PortContext(
                seg=seg,
                pool=pool,
                client_id=client_id,
                vhost_client=vhost_client,
                options=dict(options or {}),
            )
            worker = Worker(
                pool, name=f"{process_name}{client_id}-lcore{lcore}", burst=burst, lcore=lcore, spin=spin
            )
            self.lanes[lcore] = _Lane(lcore, pool, ctx, worker)
            worker.start()

    # -- commands ------------------------------------------------------------------------------

    def start_component(self, name: str, lcore: int, kind: str) -> None:
        with self._lock:
            cfg = self.config
            if kind not in self.kinds:
                raise ConfigError(f"'{kind}' is not one of {', '.join(self.kinds)}", "component type")
            if cfg.component(name) is not None:
                raise ConfigError(f"component '{name}' already exists", "component name")
            if lcore not in self.lanes:
                workers = ", ".join(map(str, self.worker_lcores)) or "none (give two or more lcores with -l)"
                if lcore == self.master:
                    why = f"lcore {lcore} is the master lcore (it answers spp-ctl)"
                else:
                    why = f"lcore {lcore} is not one of this process's lcores"
                raise ConfigError(f"{why}; worker lcores: {workers}", "core")
            new = replace(cfg, components=(*cfg.components, ComponentSpec(name, kind, lcore)))
            self.counters[name] = np.zeros(4, np.uint64)
            try:
                self._commit(new)
            except BaseException:
                del self.counters[name]
                raise

    def stop_component(self, name: str) -> None:
        """Stop and forget ``name`` (an unknown name is a silent success, as SPP). Unlike SPP,
        the table entries of a classifier's ports go with it (SPP meant to, but a bug kept them)."""
        with self._lock:
            cfg = self.config
            spec = cfg.component(name)
            if spec is None:
                return
            tx = {a.uid for a in spec.tx}
            new = Config(
                components=tuple(c for c in cfg.components if c.name != name),
                entries=tuple((u, e) for u, e in cfg.entries if u not in tx),
            )
            self._commit(new)
            self.counters.pop(name, None)

    def attach(self, uid: PortId, direction: str, name: str, vlan: VlanOp | None) -> None:
        """``port add``. With a VLAN option, a port already attached there gets the new option;
        without one, attaching it again is a no-op (both as SPP)."""
        with self._lock:
            cfg = self.config
            self._check_port(uid)
            spec = self._component(cfg, name)
            i = spec.find(direction, uid)
            if i >= 0:
                if vlan is None:
                    return
                ports = list(spec.ports(direction))
                ports[i] = Attachment(uid, vlan)
                self._commit(cfg.with_component(_with_ports(spec, direction, ports)))
                return
            for other in cfg.components:
                if other.find(direction, uid) >= 0:
                    raise ConfigError(
                        f"{uid} is already the {direction} port of component '{other.name}' "
                        f"(a port has one {direction} user)",
                        "port rxtx",
                    )
            limit = LIMITS[spec.kind][0 if direction == RX_DIR else 1]
            if len(spec.ports(direction)) >= limit:
                raise ConfigError(
                    f"component '{name}' ({spec.kind}) takes at most {limit} {direction} "
                    f"port{'s' if limit > 1 else ''}"
                )
            ports = [*spec.ports(direction), Attachment(uid, vlan or NO_VLAN)]
            self._commit(cfg.with_component(_with_ports(spec, direction, ports)))
            if uid.type in ("ring", "vhost"):
                self.created.add(uid)

    def detach(self, uid: PortId, direction: str, name: str) -> None:
        """``port del``. A classifier's tx port loses its table entry with it."""
        with self._lock:
            cfg = self.config
            spec = self._component(cfg, name)
            i = spec.find(direction, uid)
            if i < 0:
                raise ConfigError(f"{uid} is not a {direction} port of component '{name}'")
            ports = [a for a in spec.ports(direction) if a.uid != uid]
            new = cfg.with_component(_with_ports(spec, direction, ports))
            if direction == TX_DIR and spec.kind == CLASSIFIER:
                new = replace(new, entries=tuple((u, e) for u, e in new.entries if u != uid))
            self._commit(new)

    def add_entry(self, entry: Entry, uid: PortId) -> None:
        with self._lock:
            cfg = self.config
            cls = self._classifier_of(cfg, uid)
            old = cfg.entry_of(uid)
            if old is not None:
                raise ConfigError(
                    f"{uid} already has the entry '{old.describe()}' (a port holds one; delete it first)"
                )
            for i, e in cfg.table_of(cls):
                if (e.vid, e.mac) == (entry.vid, entry.mac):
                    raise ConfigError(
                        f"'{entry.describe()}' is already in the table of '{cls.name}' for {cls.tx[i].uid}"
                    )
            self._commit(replace(cfg, entries=(*cfg.entries, (uid, entry))))

    def del_entry(self, entry: Entry, uid: PortId) -> None:
        with self._lock:
            cfg = self.config
            old = cfg.entry_of(uid)
            if old != entry:
                has = f"its entry is '{old.describe()}'" if old else "it has none"
                raise ConfigError(f"{uid} has no entry '{entry.describe()}' ({has})")
            self._commit(replace(cfg, entries=tuple((u, e) for u, e in cfg.entries if u != uid)))

    # -- views ---------------------------------------------------------------------------------

    def status(self, with_table: bool) -> dict[str, object]:
        """The ``info`` object of SPP's status, minus ``client-id`` (the caller puts it first)."""
        with self._lock:
            cfg = self.config
            created = sorted(self.created)
            info: dict[str, object] = {
                "phy": [str(n) for n in range(len(self.seg.spec.phys))],
                "vhost": [str(u.num) for u in created if u.type == "vhost"],
                "ring": [str(u.num) for u in created if u.type == "ring"],
                "master-lcore": self.master,
                "core": self._cores(cfg),
            }
            if with_table:
                info["classifier_table"] = self._table(cfg)
            # Not in SPP: per port, drops by reason and offload work done; only when there are
            # any, so that the reply is SPP's byte for byte otherwise.
            xstats = self._xstats()
            if xstats:
                info["xstats"] = xstats
            # Not in SPP: this process's counters per port in use, as spp_nfv's ``stats``.
            stats = self._port_stats()
            if stats:
                info["stats"] = stats
            return info

    def _port_stats(self) -> list[dict[str, object]]:
        """Counters of every port in use, added up over the lanes that opened it. Phy and ring
        handles of all lanes are views of this process's one row in the segment, so a row is
        counted once; other drivers count in the handle, rx on one lane and tx on another."""
        totals: dict[PortId, np.ndarray] = {}
        infos: dict[PortId, dict[str, object]] = {}
        rows_seen: set[int] = set()
        for lane in self.lanes.values():
            for uid, port in lane.ports.items():
                acc = totals.setdefault(uid, np.zeros(NB_COUNTERS, np.uint64))
                address = port.counters.__array_interface__["data"][0]
                if address not in rows_seen:
                    rows_seen.add(address)
                    acc += port.counters
                info = getattr(port, "info", None)
                if info is not None:  # a vhost port's peer: socket, connected, errors
                    infos.setdefault(uid, {}).update(info())
        out: list[dict[str, object]] = []
        for uid in sorted(totals):
            c = totals[uid]
            entry: dict[str, object] = {
                "port": uid.display,
                **counter_fields(c),
            }
            entry.update(infos.get(uid, {}))
            out.append(entry)
        return out

    def _xstats(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for lane in self.lanes.values():
            for uid, port in lane.ports.items():
                xs = xstats_dict(port.xstats)
                if xs:
                    merged = out.setdefault(uid.display, {})
                    for k, v in xs.items():
                        merged[k] = merged.get(k, 0) + v
        return out

    def _cores(self, cfg: Config) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for lcore in self.worker_lcores:
            comps = [c for c in cfg.components if c.lcore == lcore]
            if not comps:
                out.append({"core": lcore, "type": "unuse"})
            for c in comps:
                ctr = self.counters[c.name]
                out.append(
                    {
                        "core": lcore,
                        "name": c.name,
                        "type": c.kind,
                        "rx_port": [{"port": a.uid.display, "vlan": a.vlan.status()} for a in c.rx],
                        "tx_port": [{"port": a.uid.display, "vlan": a.vlan.status()} for a in c.tx],
                        # Not in SPP: what the component moved and lost, so drops are visible.
                        "counters": {
                            "rx": int(ctr[C_RX]),
                            "tx": int(ctr[C_TX]),
                            "tx_drop": int(ctr[C_TX_DROP]),
                            "drop": int(ctr[C_DROP]),
                        },
                    }
                )
        return out

    def _table(self, cfg: Config) -> list[dict[str, str]]:
        """Entries per classifier: untagged first, then by VID; a VID's default before its MACs."""
        out: list[dict[str, str]] = []
        for c in cfg.components:
            if c.kind != CLASSIFIER:
                continue
            rows = [(e, c.tx[i].uid) for i, e in cfg.table_of(c)]
            rows.sort(key=lambda r: (r[0].vid != UNTAGGED, r[0].vid, r[0].mac is not None))
            out += [{"type": e.type, "value": e.value, "port": uid.display} for e, uid in rows]
        return out

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the workers, close the ports, give every cached buffer back to the shared pool."""
        with self._lock:
            for lane in self.lanes.values():
                try:
                    lane.worker.publish(None)
                except TimeoutError:
                    log.error("worker on lcore %d did not stop in time", lane.lcore)
                lane.worker.stop()
                for port in lane.ports.values():
                    port.close()
                lane.ports.clear()
                lane.pool.close()
            self.lanes.clear()

    # -- internals -----------------------------------------------------------------------------

    def _component(self, cfg: Config, name: str) -> ComponentSpec:
        spec = cfg.component(name)
        if spec is None:
            names = ", ".join(c.name for c in cfg.components) or "none"
            raise ConfigError(f"no component '{name}' (components: {names})", "component name")
        return spec

    def _check_port(self, uid: PortId) -> None:
        """Refuse a port that cannot be opened (ring beyond -n, unknown phy, vhost) before any
        other check, as SPP's parser validates the port before executing anything."""
        lane = next(iter(self.lanes.values()), None)
        if lane is None:
            return  # no worker lcore, so no component either: the caller refuses anyway
        try:
            open_port(uid, lane.ctx).close()  # drivers open lazily: this costs nothing
        except PortError as e:
            raise ConfigError(str(e), "port") from None

    def _classifier_of(self, cfg: Config, uid: PortId) -> ComponentSpec:
        for c in cfg.components:
            if c.kind == CLASSIFIER and c.find(TX_DIR, uid) >= 0:
                return c
        raise ConfigError(
            f"{uid} is not a tx port of any classifier (attach it first: port add {uid} tx NAME)", "port"
        )

    def _commit(self, new: Config) -> None:
        """Open what ``new`` needs, then publish it to every lane whose part changed.

        Everything that can fail (opening ports) happens before the first publish, so a refused
        change leaves the running configuration as it was.
        """
        plans: list[tuple[_Lane, object, list[Step], dict[PortId, Port]]] = []
        opened: list[Port] = []
        try:
            for lane in self.lanes.values():
                specs = tuple(c for c in new.components if c.lcore == lane.lcore)
                entries = tuple(
                    (a.uid, new.entry_of(a.uid)) for c in specs if c.kind == CLASSIFIER for a in c.tx
                )
                signature = (specs, entries)
                if signature == lane.signature:
                    continue
                ports: dict[PortId, Port] = {}
                for uid in _uids(specs):
                    if uid in lane.ports:
                        ports[uid] = lane.ports[uid]
                    else:
                        ports[uid] = open_port(uid, lane.ctx)
                        opened.append(ports[uid])
                steps = [s for c in specs if (s := self._step(c, new, ports, lane.pool)) is not None]
                plans.append((lane, signature, steps, ports))
        except PortError as e:
            for port in opened:
                port.close()
            raise ConfigError(str(e), "port") from None
        except OSError as e:
            for port in opened:
                port.close()
            raise ConfigError(f"cannot open port: {e.strerror or e}") from None
        for lane, signature, steps, ports in plans:
            try:
                lane.worker.publish(steps)
            except TimeoutError as e:
                raise ConfigError(f"worker on lcore {lane.lcore}: {e}") from None
            for uid, port in lane.ports.items():
                if ports.get(uid) is not port:
                    port.close()  # the worker let go of it when it adopted the plan
            lane.ports = ports
            lane.signature = signature
        self.config = new

    def _step(
        self, spec: ComponentSpec, cfg: Config, ports: dict[PortId, Port], pool: BufferPool
    ) -> Step | None:
        if not runnable(spec, cfg):
            return None
        rx = tuple(PortEnd(ports[a.uid], a.vlan, pool) for a in spec.rx)
        tx = tuple(PortEnd(ports[a.uid], a.vlan, pool) for a in spec.tx)
        ctr = self.counters[spec.name]
        if spec.kind == FORWARD:
            return ForwardStep(rx[0], tx[0], ctr)
        if spec.kind == MERGE:
            return MergeStep(rx, tx[0], ctr)
        if spec.kind == MIRROR:
            return MirrorStep(rx[0], tx[0], tx[1], ctr, pool)
        return ClassifierStep(rx[0], tx, ClassifierTable(cfg.table_of(spec)), ctr, pool)


def _with_ports(spec: ComponentSpec, direction: str, ports: Iterable[Attachment]) -> ComponentSpec:
    return replace(spec, **{direction: tuple(ports)})


def _uids(specs: Iterable[ComponentSpec]) -> list[PortId]:
    seen: dict[PortId, None] = {}
    for c in specs:
        for a in (*c.rx, *c.tx):
            seen[a.uid] = None
    return list(seen)
