"""Switching a phy port's fanout program off the forwarding thread.

A phy port moves its interface's frames between its TPACKET_V3 ring and its ringless socket with
``setsockopt(PACKET_FANOUT_DATA)`` (``spp.engine.ports.phy``). The kernel installs the new program
at once, then waits out an RCU grace period before it frees the old one and returns: 15-30 ms on
the reference VM. Made on the worker thread, that call stopped all forwarding of the worker (every
port of its plan) for as long. Here a helper thread per process makes it instead; the worker
carries on with the socket that still holds the older frames, and learns that the switch is
complete from a flag and an eventfd of the port's (in the port's epoll set, so a worker asleep
meanwhile is woken).

The call goes through ``ctypes`` (a ``CDLL`` function releases the GIL for the syscall) because
``socket.setsockopt`` keeps the GIL for the duration of the syscall: from a Python thread it would
stall the worker all the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import threading
from collections.abc import Callable

from spp.engine.linux import (
    PACKET_FANOUT_DATA,
    SOL_PACKET,
)
from spp.engine.worker import name_os_thread

__all__ = ["SWITCHER", "Switcher", "set_fanout_data"]

log = logging.getLogger(__name__)


_libc = ctypes.CDLL(None, use_errno=True)
_setsockopt = _libc.setsockopt
_setsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_setsockopt.restype = ctypes.c_int


def set_fanout_data(fd: int, prog: bytes) -> int:
    """``setsockopt(fd, SOL_PACKET, PACKET_FANOUT_DATA, prog)`` without the GIL; 0 or the errno."""
    if _setsockopt(fd, SOL_PACKET, PACKET_FANOUT_DATA, prog, len(prog)) == 0:
        return 0
    return ctypes.get_errno() or -1


class Switcher:
    """A daemon thread running jobs one at a time, in the order they were submitted (started on
    the first job). Jobs are the ports' fanout switches; a port never has two in flight."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="spp-fanout", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            # (the name shows in top -H and in spp-ctl's per-thread CPU, as the workers' do)
            name_os_thread("spp-fanout")
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:  # a job must never take the thread (and every later switch) down
                log.exception("fanout switch failed")


#: the process's switcher, shared by all its phy ports
SWITCHER = Switcher()


class PendingSwitch:
    """One switch in flight. The helper sets ``error``, writes ``wake_fd``, sets ``done``, then
    ``event``; :meth:`cancel` makes sure it no longer touches either descriptor.

    ``wake_fd`` is written *before* ``done`` is set: the worker that sees ``done`` reads the
    eventfd empty once it finishes the switch. The other order let it read first, now and then;
    the helper's write then left the eventfd readable for good, and the worker, whose poll set
    holds it, span at 100 % CPU instead of sleeping until the port's next switch."""

    __slots__ = ("_lock", "_started", "cancelled", "done", "error", "event")

    def __init__(self) -> None:
        self.done = False
        self.error = 0
        self.cancelled = False
        self.event = threading.Event()
        self._lock = threading.Lock()
        self._started = False

    def run(self, fd: int, prog: bytes, wake_fd: int) -> None:
        with self._lock:
            if self.cancelled:
                self.event.set()
                return
            self._started = True
        try:
            self.error = set_fanout_data(fd, prog)
        finally:
            with contextlib.suppress(OSError):
                os.eventfd_write(wake_fd, 1)
            self.done = True
            self.event.set()

    def cancel(self, timeout: float = 2.0) -> bool:
        """The port is closing: a switch not started yet never will be; one under way is waited
        for. Returns whether its descriptors are free to close."""
        with self._lock:
            if not self._started:
                self.cancelled = True
                return True
        return self.event.wait(timeout)
