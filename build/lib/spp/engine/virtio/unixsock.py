"""The vhost-user socket file, shared by our back-end (``vhost:N``) and our front-end (``virtio_user:N``).

Either side may be the one that listens (SPP's ``--vhost-client`` turns it round, as DPDK's
``server=1`` does), so both need the same care with the file: a live peer's socket is never
unlinked, a stale one (its server died) is replaced, and on close only the file this process
created is removed — a newer server may have taken the path meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import stat


def listen(path: str, error: type[Exception]) -> tuple[socket.socket, int]:
    """Listen on ``path``; returns the socket and the inode of the file it made.

    Raises ``error`` when ``path`` is something else than a socket, is served by a live process,
    or cannot be bound.
    """
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise error(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # a stale socket nobody listens on (a process that died)
        else:
            raise error(f"{path} is in use by another vhost-user server")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        sock.listen(1)
    except OSError as e:
        sock.close()
        raise error(f"cannot listen on {path}: {e.strerror}") from None
    return sock, os.stat(path).st_ino


def unlink_if_ours(path: str, inode: int | None) -> None:
    """Remove ``path`` only if it is still the socket file we created (same inode)."""
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == inode:
            os.unlink(path)


def wait_readable(fd: int, stop_fd: int, timeout: float | None) -> bool:
    """Wait until ``fd`` is readable or ``timeout`` passes; False when ``stop_fd`` was signalled."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    p.register(stop_fd, select.POLLIN)
    events = p.poll(None if timeout is None else int(timeout * 1000))
    return not any(f == stop_fd for f, _ in events)


def is_signalled(stop_fd: int) -> bool:
    """Whether the eventfd ``stop_fd`` has been written (without consuming it)."""
    p = select.poll()
    p.register(stop_fd, select.POLLIN)
    return bool(p.poll(0))
