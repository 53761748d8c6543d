"""The forwarding worker: one thread that runs a *plan* (a tuple of steps) burst by burst.

A step is anything with ``inputs`` (the ports it receives from) and ``run(burst) -> packets
moved``: spp_nfv's :class:`Route` (one source, one destination; run inline, it is the hot path of
the patch panel), or a component of spp_vf/spp_mirror (a classifier, a merge, a mirror).

The control side never edits what the worker is using. It builds a new immutable plan and
:meth:`Worker.publish` es it; the worker adopts it between two bursts and acknowledges, and only
then does ``publish`` return. After that the old plan's ports are no longer touched by the worker
and may be closed. Every burst is received, transmitted and (for what transmit refused) freed
within one pass, so at a plan boundary no packet is held anywhere: re-patching under traffic
loses nothing that was not counted as a drop.

Idle behaviour: a worker that moved nothing keeps polling for ``spin`` seconds (0.2 ms by
default: traffic often resumes within microseconds; nfv's ``--busy-poll-us`` trades CPU for
latency as NAPI busy polling does), then sleeps in ``poll()`` on its ports' descriptors and its
wake-up eventfd. Every input port is asked first (:meth:`Port.prepare_sleep`): a ring announces
the sleep in its doorbell so that its producer writes our eventfd (:mod:`spp.engine.doorbell`), a
phy port switches to per-frame readiness; only ports that cannot wake us at all (a null source, a
pcap file) make the sleep a timer that backs off to ``max_idle``. A stopped worker or one with an
empty plan blocks on the eventfd alone. Either way an idle worker uses no CPU to speak of.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import select
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from spp.engine import doorbell
from spp.engine.pool import BufferPool
from spp.engine.ports.base import (
    NOTHING,
    PENDING,
    POLL,
    RX,
    RX_BYTES,
    TX,
    TX_BYTES,
    TX_DROP,
    Port,
    Step,
    burst_bytes,
    forward_burst,
    forward_one,
)

log = logging.getLogger(__name__)

DEFAULT_BURST = 256
BURST_GROWTH = 4  # a Route's burst grows up to this many times the configured one under load
SPIN_SECONDS = 0.0002
MIN_IDLE = 0.0001


@dataclass(frozen=True)
class Route:
    """Packets received on ``src`` are transmitted on ``dst``."""

    src: Port
    dst: Port

    @property
    def inputs(self) -> tuple[Port, ...]:
        return (self.src,)

    def run(self, burst: int) -> int:
        return forward_burst(self.src, self.dst, burst)


SLICE_NS = 100_000
_SYS_SCHED_SETATTR = 314  # x86-64
_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_NAME = 15


def name_os_thread(name: str) -> None:
    """Give the OS thread the worker's name (15 bytes at most): ``top -H``, ``/proc`` and
    spp-ctl's ``/metrics`` (CPU per thread) then tell the packet loop from the control thread."""
    _libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def ask_for_short_slices() -> bool:
    """Ask the scheduler for short slices (``sched_setattr``, normal policy and priority).

    A woken worker has a few tens of microseconds of work, but on a busy CPU it waits for the
    running task's slice to end before it gets to do it. Linux's EEVDF scheduler (6.12 on) lets
    a task that asks for a shorter slice preempt others when it wakes up; in exchange it is
    preempted sooner itself, so it takes no more CPU than before. Elsewhere the call fails or
    is ignored, harmlessly. Returns whether the kernel accepted it.
    """
    if platform.machine() != "x86_64":
        return False
    # struct sched_attr: size, policy, flags, nice, priority, runtime (the slice), ...
    attr = ctypes.create_string_buffer(struct.pack("IIQiIQQQII", 56, 0, 0, 0, 0, SLICE_NS, 0, 0, 0, 0), 56)
    return _libc.syscall(_SYS_SCHED_SETATTR, 0, attr, 0) == 0


class Worker(threading.Thread):
    def __init__(
        self,
        pool: BufferPool,
        name: str = "spp-worker",
        burst: int = DEFAULT_BURST,
        lcore: int | None = None,
        max_idle: float = 0.001,
        backstop: float | None = 1.0,
        spin: float = SPIN_SECONDS,
    ) -> None:
        """``backstop``: the longest sleep even when every port promised to wake us (None: no
        limit), a safety net only: nothing relies on it. ``spin``: how long the worker keeps
        polling its ports after the last packet before it sleeps (seconds). The default keeps a
        worker that sees no traffic at ~0 CPU; a longer one keeps it awake, polling (a core's
        worth of CPU), across gaps in traffic shorter than ``spin``, so a packet after such a gap
        meets no wake-up (which costs 50-100 µs on a VM whose idle vCPU halts)."""
        super().__init__(name=name, daemon=True)
        self.pool = pool
        self.burst = burst
        self.lcore = lcore
        self.max_idle = max_idle
        self.backstop = backstop
        self.spin = spin
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        #: how ring producers find our eventfd (see spp.engine.doorbell)
        self.waiter = doorbell.new_waiter(self._wake_fd)
        self._lock = threading.Lock()
        self._adopted = threading.Condition(self._lock)
        self._pending: tuple[int, tuple[Step, ...] | None] = (0, None)
        self._generation = 0
        self._running_gen = 0
        self._quit = False

    # -- control side --------------------------------------------------------------------------

    def publish(self, steps: Sequence[Step] | None, timeout: float = 5.0) -> None:
        """Run ``steps`` from the next burst on (``None``: stop). Returns once adopted."""
        with self._lock:
            self._generation += 1
            gen = self._generation
            self._pending = (gen, tuple(steps) if steps is not None else None)
        self._wake()
        if not self.is_alive():
            return
        with self._adopted:
            if not self._adopted.wait_for(lambda: self._running_gen >= gen or not self.is_alive(), timeout):
                raise TimeoutError("forwarding worker did not adopt the new configuration")

    def stop(self) -> None:
        self._quit = True
        self._wake()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(5)
        os.close(self._wake_fd)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wake_fd, 1)

    # -- worker side ---------------------------------------------------------------------------

    def run(self) -> None:
        if self.lcore is not None and self.lcore in os.sched_getaffinity(0):
            # DPDK pins each lcore's thread; do the same when the lcore exists on this machine.
            os.sched_setaffinity(0, {self.lcore})
        ask_for_short_slices()
        name_os_thread(self.name)
        steps: tuple[Step, ...] | None = None
        gen_seen = 0
        poller = select.poll()
        poller.register(self._wake_fd, select.POLLIN)
        polled_fds: set[int] = set()
        inputs: list[Port] = []
        idle_since = 0.0
        idle_sleep = MIN_IDLE
        burst = self.burst
        max_burst = burst * BURST_GROWTH
        spin = self.spin
        sizes: list[int] = []
        free = self.pool.free
        lengths = self.pool.lengths
        while not self._quit:
            gen, pending = self._pending
            if gen != gen_seen:
                steps, gen_seen = pending, gen
                inputs = list({id(p): p for step in steps or () for p in step.inputs}.values())
                for fd in polled_fds:
                    poller.unregister(fd)
                polled_fds = {fd for port in inputs for fd in port.wait_fds()}
                for fd in polled_fds:
                    poller.register(fd, select.POLLIN)
                with self._adopted:
                    self._running_gen = gen
                    self._adopted.notify_all()
                idle_since = 0.0
                sizes = [burst] * len(steps or ())
            if not steps:
                self._sleep(poller, None)
                continue
            moved = 0
            for i, route in enumerate(steps):
                if route.__class__ is not Route:
                    moved += route.run(burst)
                    continue
                # Route, inlined: the patch panel's whole per-burst cost is these lines.
                src = route.src
                one = src.rx_one()
                if one >= 0:
                    # A lone packet (the idle panel's ping): Python ints only, no numpy, whose
                    # first call after a pause costs tens of µs on a VM (Port.rx_one).
                    moved += 1
                    forward_one(src, route.dst, one)
                    continue
                if one == NOTHING:
                    continue
                want = sizes[i]
                bufs = src.rx_burst(want)
                n = len(bufs)
                # A source that keeps filling its bursts gets larger ones (the cost of a burst
                # is mostly fixed); one that does not falls back to the configured size.
                if n == want:
                    if want < max_burst:
                        sizes[i] = want << 1
                elif want > burst and n <= want >> 1:
                    sizes[i] = max(burst, want >> 1)
                if n == 0:
                    continue
                moved += n
                nbytes = int(burst_bytes(lengths.take(bufs)))  # before tx: sent buffers are not ours
                src_ctr = src.ctr
                src_ctr[RX] += n
                src_ctr[RX_BYTES] += nbytes
                sent = route.dst.tx_burst(bufs)
                dst_ctr = route.dst.ctr
                dst_ctr[TX] += sent
                if sent < n:
                    nbytes -= int(burst_bytes(lengths.take(bufs[sent:])))
                    free(bufs[sent:])
                    dst_ctr[TX_DROP] += n - sent
                dst_ctr[TX_BYTES] += nbytes
            if moved:
                idle_since = 0.0
                idle_sleep = MIN_IDLE
                continue
            now = time.monotonic()
            if not idle_since:
                idle_since = now
            elif now - idle_since <= spin:
                # Spinning, but let another worker pinned to this CPU run meanwhile: on a
                # machine with fewer cores than workers, the packets we wait for come from it.
                os.sched_yield()
            else:
                answers = [port.prepare_sleep(self.waiter) for port in inputs]
                try:
                    if PENDING in answers:
                        continue
                    if POLL in answers:
                        self._sleep(poller, idle_sleep)
                        idle_sleep = min(idle_sleep * 2, self.max_idle)
                    else:
                        self._sleep(poller, self.backstop)
                finally:
                    for port in inputs:
                        port.end_sleep()
        with self._adopted:
            self._running_gen = self._generation
            self._adopted.notify_all()

    def _sleep(self, poller: select.poll, timeout: float | None) -> None:
        """Wait for a port, a control wake-up or ``timeout`` seconds (``None``: no limit)."""
        if timeout is not None and timeout < 0.001:
            time.sleep(timeout)  # poll() counts in whole milliseconds; short naps go here
            return
        for fd, _ in poller.poll(-1 if timeout is None else int(timeout * 1000)):
            if fd == self._wake_fd:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self._wake_fd)
