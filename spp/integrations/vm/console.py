"""Run a command in a guest through its serial console (a unix socket QEMU serves).

The guest's console is an interactive shell that echoes what it is sent, so the command is framed
by two markers the shell *prints*: ``echo __SPP""B_<nonce>`` and ``echo __SPP""E_<nonce>_$?``.
The echoed input contains ``__SPP""B``, the output ``__SPPB``, so the two are never confused;
the text between the printed markers is the command's output and the number after the end
marker its exit status. A lock file keeps two callers from typing into one console at once
(QEMU's chardev serves one connection at a time anyway).
"""

from __future__ import annotations

import fcntl
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


class ConsoleError(RuntimeError):
    """The console did not answer (no VM, guest not booted, command still running at timeout)."""


@dataclass
class ExecResult:
    output: str
    status: int


def wait_for_mark(
    log: Path, mark: str, timeout: float, alive: object = None, ready: Callable[[bytes], bool] | None = None
) -> None:
    """Wait until ``mark`` appears in the serial log (the guest printed it), or, given ``ready``,
    until ``ready(log contents)`` says so."""
    deadline = time.monotonic() + timeout
    seen = ready or (lambda data: mark.encode() in data)
    while time.monotonic() < deadline:
        if log.exists() and seen(log.read_bytes()):
            return
        if callable(alive) and not alive():
            raise ConsoleError("the VM exited before its guest was ready")
        time.sleep(0.2)
    raise ConsoleError(f"guest not ready after {timeout:.0f} s (no '{mark}' in {log})")


def serial_exec(sock_path: Path, command: str, timeout: float = 60.0) -> ExecResult:
    """Type ``command`` into the guest shell on ``sock_path``; return its output and status."""
    if "\n" in command:
        raise ConsoleError("the command must be a single line")
    nonce = secrets.token_hex(6)
    begin = f"__SPPB_{nonce}".encode()
    end = re.compile(rb"__SPPE_" + nonce.encode() + rb"_(\d+)\n")  # whole number: up to the newline
    line = f'echo __SPP""B_{nonce}; {command}; echo __SPP""E_{nonce}_$?\n'
    lock_path = sock_path.with_name(sock_path.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(5)
            try:
                s.connect(str(sock_path))
            except OSError as e:
                raise ConsoleError(
                    f"cannot connect to the serial console {sock_path}: {e.strerror}"
                ) from None
            # A fresh line first: whatever a previous user left half-typed is discarded.
            s.sendall(b"\x15\n")
            _send_slowly(s, line.encode())
            buf = b""
            deadline = time.monotonic() + timeout
            while True:
                clean = _ANSI.sub(b"", buf)
                start = clean.find(begin + b"\n")
                if start >= 0:
                    m = end.search(clean, start)
                    if m:
                        out = clean[start + len(begin) + 1 : m.start()]
                        return ExecResult(out.decode(errors="replace"), int(m.group(1)))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConsoleError(f"no answer from the guest within {timeout:.0f} s")
                s.settimeout(min(left, 1.0))
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    raise ConsoleError("the serial console closed (VM stopped?)")
                buf += chunk
        finally:
            s.close()


def _send_slowly(s: socket.socket, data: bytes, chunk: int = 16) -> None:
    """Send in UART-FIFO-sized pieces: an emulated 16550 takes 16 bytes at a time, and a slow
    (TCG) guest may otherwise miss characters while QEMU's backlog is full."""
    for i in range(0, len(data), chunk):
        s.sendall(data[i : i + chunk])
        time.sleep(0.002)
