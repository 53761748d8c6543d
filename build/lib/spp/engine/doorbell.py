"""Ring doorbells: how a producer in one process wakes a consumer that sleeps in another.

A worker that found nothing to do for a while sleeps in ``poll()`` on its own wake-up eventfd
(plus its ports' sockets). Before it does, it *announces* the sleep in each input ring's
doorbell line in shared memory and looks at the ring once more; a producer, after publishing
new slots, looks at the announcement and, only if it is set, writes the sleeper's eventfd. A
busy consumer therefore costs its producers nothing but one atomic instruction per burst.

The two sides form Dekker's pattern, and each needs a *full* barrier between its store and its
load (docs/ARCHITECTURE.md, "Waking an idle worker", walks through the race):

* consumer: store ``ASLEEP = 1`` → barrier → load ``head`` (empty? then sleep)
* producer: store ``head`` → barrier → load ``ASLEEP`` (set? then ring)

x86-64 lets a load overtake an earlier store to another address (the store waits in the store
buffer), so without the barriers both sides could read the old values: the consumer sees an
empty ring, the producer sees nobody asleep, and the packet waits for the next one. Python has
no fence, so the store itself is made a locked read-modify-write (``xchg``/``lock xadd``, which
x86 never reorders with later loads) through libatomic's ``__atomic_exchange_8`` and
``__atomic_fetch_add_8``.

The eventfd lives in the consumer's process. The producer fetches its own copy once with
``pidfd_getfd`` (Linux 5.6; the same permission as ptrace, so same user or CAP_SYS_PTRACE), names
it by the ``WAITER`` word (pid, fd number and a registration epoch, one 64-bit store so it is
never read half-written) and checks it really is an eventfd before writing to it. A producer that
may not take the fd marks the ring ``NO_BELL`` and the consumer falls back to polling it on a
timer.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import os

import numpy as np

# uint64 slots of a ring's control block (shm.RING_CTL bytes): head at 0, tail at 8 (byte 64),
# and the doorbell line from byte 128.
ASLEEP, WAITER, NO_BELL = 16, 17, 18

SYS_PIDFD_GETFD = 438  # x86-64 and the generic table alike
_SEQ_CST = 5
_epochs = itertools.count(1)


def _load_atomics() -> tuple[object, object] | None:
    name = ctypes.util.find_library("atomic") or "libatomic.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    xchg, fadd = lib.__atomic_exchange_8, lib.__atomic_fetch_add_8
    for fn in (xchg, fadd):
        fn.argtypes = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int)
        fn.restype = ctypes.c_uint64
    return xchg, fadd


_ATOMICS = _load_atomics()
#: Whether doorbells can be used at all (libatomic present); without them rings are polled.
AVAILABLE = _ATOMICS is not None
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def exchange(addr: int, value: int) -> int:
    """Store ``value`` at ``addr`` with a full barrier; return what was there."""
    assert _ATOMICS is not None
    return _ATOMICS[0](addr, value, _SEQ_CST)  # type: ignore[operator]


def fetch_add(addr: int, value: int) -> int:
    """Add ``value`` at ``addr`` with a full barrier; return the old value."""
    assert _ATOMICS is not None
    return _ATOMICS[1](addr, value, _SEQ_CST)  # type: ignore[operator]


def waiter_id(pid: int, fd: int, epoch: int) -> int:
    """The ``WAITER`` word naming eventfd ``fd`` of process ``pid`` (22 + 20 + 22 bits)."""
    return (pid & 0x3FFFFF) << 42 | (fd & 0xFFFFF) << 22 | (epoch & 0x3FFFFF)


def new_waiter(fd: int) -> int:
    """A ``WAITER`` word for an eventfd of this process, unique even if the fd number is reused."""
    return waiter_id(os.getpid(), fd, next(_epochs))


def _steal_fd(pid: int, fd: int) -> int:
    """Our own descriptor for ``fd`` of process ``pid`` (pidfd_getfd)."""
    pidfd = os.pidfd_open(pid)
    try:
        got = _syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return int(got)
    finally:
        os.close(pidfd)


class Bell:
    """The producer's side of one ring's doorbell: rings the sleeping consumer's eventfd."""

    def __init__(self, ctl: np.ndarray) -> None:
        self._ctl = ctl
        self._waiter = 0
        self._fd = -1

    def ring(self) -> None:
        ctl = self._ctl
        ctl[ASLEEP] = 0  # one ring per sleep is enough; the consumer clears it too when it wakes
        waiter = ctl.item(WAITER)
        if not waiter:
            return
        if waiter != self._waiter:
            self._adopt(waiter)
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.eventfd_write(self._fd, 1)

    def _adopt(self, waiter: int) -> None:
        self.close()
        self._waiter = waiter
        pid, fd = waiter >> 42, (waiter >> 22) & 0xFFFFF
        try:
            mine = _steal_fd(pid, fd)
        except PermissionError:
            self._ctl[NO_BELL] = 1  # we may not wake it: the consumer must poll this ring
            return
        except OSError:
            return  # the consumer is gone (or its fd is): nobody to wake
        try:
            is_eventfd = os.readlink(f"/proc/self/fd/{mine}") == "anon_inode:[eventfd]"
        except OSError:
            is_eventfd = False
        if not is_eventfd:  # a stale name: the fd number now holds something else
            os.close(mine)
            return
        self._fd = mine

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._waiter = -1, 0
