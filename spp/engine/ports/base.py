"""The one small interface every port driver implements, and the context drivers are opened in.

A port moves *bursts*: ``rx_burst`` returns a numpy array of buffer indices (the caller now owns
them), ``tx_burst`` takes an array and returns how many it accepted (it owns those; the caller
frees the rest and counts them as ``tx_drop``). That is DPDK's ``rte_eth_rx_burst`` /
``rte_eth_tx_burst`` contract, and it is what lets a forwarder do a fixed amount of Python work
per burst whatever the burst size.
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from spp.engine.offload import new_xstats
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId
from spp.engine.shm import NB_COUNTERS, RX, RX_BYTES, RX_DROP, TX, TX_BYTES, TX_DROP, Segment

__all__ = [
    "NOTHING",
    "PENDING",
    "POLL",
    "RX",
    "RX_BYTES",
    "RX_DROP",
    "SOME",
    "TX",
    "TX_BYTES",
    "TX_DROP",
    "WAKES",
    "Port",
    "PortContext",
    "PortError",
    "Step",
    "burst_bytes",
]

# What :meth:`Port.rx_one` answers when it has no lone packet to hand over.
NOTHING = -1  # nothing waits: rx_burst would return nothing either
SOME = -2  # packets wait that rx_burst must take (a run, or one the fast path leaves alone)

# What a port answers when its worker is about to sleep (:meth:`Port.prepare_sleep`).
WAKES = 0  # it will make the worker's poll() return when packets arrive
PENDING = 1  # packets are already waiting: do not sleep
POLL = 2  # it cannot wake the worker: sleep on a short timer


class PortError(Exception):
    """A port that cannot be opened or used; the message says why, for the user."""


@dataclass
class PortContext:
    """What a driver may use: the shared segment, this thread's pool handle, and options."""

    seg: Segment
    pool: BufferPool
    client_id: int = 0  # the counter row this process writes
    vhost_client: bool = False
    options: dict[str, str] = field(default_factory=dict)


class Port(abc.ABC):
    """A port as the forwarder sees it."""

    #: Whether the port makes its own packets appear without a kernel file to wait on (rings,
    #: null sources): an idle worker must then poll it on a timer instead of sleeping in poll().
    needs_polling = True

    def __init__(self, uid: PortId, ctx: PortContext) -> None:
        self.uid = uid
        self.ctx = ctx
        self.pool = ctx.pool
        # rx, rx_drop, tx, tx_drop, rx_bytes, tx_bytes. Drivers bind phy and ring ports to the
        # shared rows that the primary reports; other types keep private counters, reported by
        # the owning process.
        self.counters = np.zeros(NB_COUNTERS, np.uint64)
        #: drops by reason and offload work done (names in :data:`spp.engine.offload.XSTATS`)
        self.xstats = new_xstats()

    @abc.abstractmethod
    def rx_burst(self, max_n: int) -> np.ndarray:
        """Receive up to ``max_n`` packets; return their buffer indices (uint32)."""

    @abc.abstractmethod
    def tx_burst(self, bufs: np.ndarray) -> int:
        """Transmit ``bufs`` in order; return how many were accepted (always a prefix)."""

    # -- one packet at a time: the idle panel's path --------------------------------------------
    #
    # A lone packet through an idle panel meets a worker whose every step runs cold: on a VM, the
    # first numpy call after a few milliseconds elsewhere costs 20-40 µs (a one-element array
    # included), a memoryview index a fraction of that. Drivers that can hand over and take a
    # lone packet as a Python int override these two; the worker tries rx_one before rx_burst.

    def rx_one(self) -> int:
        """A lone packet's buffer (the caller owns it), or :data:`NOTHING` (nothing waits) or
        :data:`SOME` (packets wait: call :meth:`rx_burst`). By default always SOME."""
        return SOME

    def tx_one(self, buf: int) -> int:
        """:meth:`tx_burst` for one buffer given as an int: 1 if the port took it, 0 if not (the
        caller frees it and counts the drop)."""
        return self.tx_burst(np.array((buf,), np.uint32))

    def _sent_first(self, bufs: np.ndarray, sent_pos: np.ndarray) -> int:
        """Free the buffers at ``sent_pos`` and move the others behind them (in order), so that
        the caller's "free and count the rest" sees exactly the frames that did not go."""
        n = len(bufs)
        rest = np.ones(n, bool)
        rest[sent_pos] = False
        order = np.concatenate([sent_pos, np.flatnonzero(rest)])
        sent = len(sent_pos)
        if bufs.flags.writeable:
            bufs[:] = bufs[order]
            self.pool.free(bufs[:sent])
            return sent
        # (A read-only burst cannot be reordered: consume it all and count the drops here.)
        self.pool.free(bufs)
        self.counters[TX_DROP] += n - sent
        return n

    @functools.cached_property
    def ctr(self) -> memoryview:
        """:attr:`counters` as Python ints (a memoryview of the same row): see :meth:`rx_one`."""
        return memoryview(self.counters).cast("B").cast("Q")

    def route_to(self, dst: Port) -> Step | None:
        """A faster step than the generic receive/transmit for packets going to ``dst``, or None.

        Drivers offer one when they can move packets between two of their ports without the pool
        (phy to phy: straight from the receive ring to the transmit socket).
        """
        return None

    def fileno(self) -> int | None:
        """A descriptor that becomes readable when rx has packets, if the port has one."""
        return None

    def wait_fds(self) -> tuple[int, ...]:
        """The descriptors the worker polls while it sleeps (readable: come and receive)."""
        fd = self.fileno()
        return () if fd is None else (fd,)

    def prepare_sleep(self, waiter: int) -> int:
        """Get ready for the worker, named ``waiter`` (its eventfd, as
        :func:`spp.engine.doorbell.new_waiter`), to sleep; answer WAKES, PENDING or POLL.
        :meth:`end_sleep` follows in every case."""
        return POLL if self.needs_polling else WAKES

    def end_sleep(self) -> None:  # noqa: B027 - only ports with a doorbell have one to clear
        """The worker woke up (or decided not to sleep)."""

    def close(self) -> None:  # noqa: B027 - most ports hold nothing to release
        """Release what the port holds. Buffers it owns go back to the pool."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uid}>"


class Step(Protocol):
    """One unit of a worker's plan (:mod:`spp.engine.worker`). ``run`` must finish each burst it
    receives (transmit or free every buffer) so that no packet is held across a plan change.

    It lives here, beside :class:`Port`, because both the worker and the drivers (``route_to``)
    use it, and the drivers must not depend on the worker.
    """

    @property
    def inputs(self) -> tuple[Port, ...]: ...

    def run(self, burst: int) -> int: ...


burst_bytes = np.add.reduce
"""``burst_bytes(lengths.take(bufs))``: the bytes of a burst as one uint64, with one gather and one
reduction (no Python per packet). Taken *before* ``tx_burst``: what a port accepted belongs to it,
and its buffers may be reused (and their lengths rewritten) at once; what it refused is still ours,
so tx bytes are the burst's bytes minus the refused ones'."""


def count_rx_one(src: Port, buf: int) -> int:
    """Count a lone packet ``buf`` that :meth:`Port.rx_one` of ``src`` gave; returns its length
    (to be read before it is sent: a sent buffer is not ours). Python ints only."""
    nbytes = src.pool.len_mv[buf]
    src_ctr = src.ctr
    src_ctr[RX] += 1
    src_ctr[RX_BYTES] += nbytes
    return nbytes


def send_one(dst: Port, buf: int, nbytes: int) -> bool:
    """Send a lone packet of ``nbytes`` on ``dst``, counted; refused, it is freed and counted as
    ``dst``'s tx_drop. Returns whether ``dst`` took it."""
    dst_ctr = dst.ctr
    if dst.tx_one(buf):
        dst_ctr[TX] += 1
        dst_ctr[TX_BYTES] += nbytes
        return True
    dst.pool.free_one(buf)
    dst_ctr[TX_DROP] += 1
    return False


def forward_one(src: Port, dst: Port, buf: int) -> bool:
    """:func:`forward_burst` for a lone packet ``buf`` that :meth:`Port.rx_one` of ``src`` gave:
    sent on ``dst``, counted on both, freed if refused. Returns whether ``dst`` took it."""
    return send_one(dst, buf, count_rx_one(src, buf))


def forward_burst(src: Port, dst: Port, burst: int) -> int:
    """Receive a burst on ``src``, send it on ``dst``, free and count what ``dst`` refused."""
    bufs = src.rx_burst(burst)
    n = len(bufs)
    if n == 0:
        return 0
    lengths = src.pool.lengths
    nbytes = burst_bytes(lengths.take(bufs))
    src_ctr = src.counters
    src_ctr[RX] += n
    src_ctr[RX_BYTES] += nbytes
    sent = dst.tx_burst(bufs)
    dst_ctr = dst.counters
    dst_ctr[TX] += sent
    if sent < n:
        nbytes -= burst_bytes(lengths.take(bufs[sent:]))
        src.pool.free(bufs[sent:])
        dst_ctr[TX_DROP] += n - sent
    dst_ctr[TX_BYTES] += nbytes
    return n
