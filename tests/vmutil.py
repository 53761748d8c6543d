"""Helpers for tests with real QEMU guests."""

from __future__ import annotations

import fcntl
import socket
import time
from pathlib import Path


def type_on_console(sock: Path, line: str) -> None:
    """Type a line on a guest's console (its serial socket) without waiting for an answer (there
    is none to a reboot), under the console's lock like every other user of it."""
    with open(sock.with_name(sock.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(sock))
            s.sendall(b"\x15\n" + line.encode() + b"\n")
            time.sleep(0.5)  # the console sees it before the connection goes
