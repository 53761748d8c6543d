"""Who is at the other end of an accepted TCP connection: its uid (and pid) from the kernel's tables.

TCP has no ``SO_PEERCRED``, but for a peer on this host (and in this network namespace) the
kernel lists the peer's own socket in ``/proc/net/tcp`` / ``tcp6``: its local address is our
connection's remote address and vice versa, and the line carries the owning uid and the socket's
inode. The inode leads to the process holding it (``/proc/PID/fd/* -> socket:[INODE]``), which
lets spp-ctl tell a stopped process (SIGSTOP) from a hung one. A peer not found there is remote.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

PROC_NET = Path("/proc/net")
PROC = Path("/proc")
TCP_LISTEN = "0A"


@dataclass(frozen=True)
class PeerCred:
    """The local peer's socket: owner uid and inode; pid once looked up (None if not found)."""

    uid: int
    inode: int
    pid: int | None = None


def _hex_addrs(ip: str, port: int) -> list[tuple[str, str]]:
    """Where ``ip:port`` may be listed: ``(table, "ADDR:PORT")`` as the kernel prints it.

    An IPv4 address can belong to an IPv4 socket (``/proc/net/tcp``) or to a dual-stack IPv6
    one, which lists it IPv4-mapped (``/proc/net/tcp6``).
    """
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv6Address):
        return [("tcp6", _hex6(addr, port))]
    (word,) = struct.unpack("=I", addr.packed)
    mapped = ipaddress.IPv6Address(f"::ffff:{addr}")
    return [("tcp", f"{word:08X}:{port:04X}"), ("tcp6", _hex6(mapped, port))]


def _hex6(addr: ipaddress.IPv6Address, port: int) -> str:
    return "".join(f"{w:08X}" for w in struct.unpack("=4I", addr.packed)) + f":{port:04X}"


def lookup(sock: socket.socket) -> PeerCred | None:
    """The credentials of ``sock``'s peer if it is a socket of this host, else None."""
    try:
        peer = sock.getpeername()
        local = sock.getsockname()
    except OSError:
        return None
    locals_ = dict(_hex_addrs(local[0], local[1]))
    for table, peer_hex in _hex_addrs(peer[0], peer[1]):
        local_hex = locals_.get(table)
        if local_hex is None:
            continue
        try:
            with open(PROC_NET / table) as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if len(fields) < 10 or fields[1] != peer_hex or fields[2] != local_hex:
                        continue
                    if fields[3] != TCP_LISTEN:
                        return PeerCred(uid=int(fields[7]), inode=int(fields[9]))
        except OSError:
            continue
    return None


def find_pid(inode: int) -> int | None:
    """The process holding socket ``inode`` (only processes whose fds we may read are found)."""
    target = f"socket:[{inode}]"
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        fd_dir = f"{entry.path}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"{fd_dir}/{fd}") == target:
                    return int(entry.name)
    return None


def is_stopped(pid: int) -> bool:
    """Is ``pid`` stopped by a signal (SIGSTOP, SIGTSTP) or a tracer? False if it is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    # "PID (comm) STATE ...": comm may contain spaces and parentheses, the state follows the last ')'.
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state in (["T"], ["t"])


def may_register(cred: PeerCred | None, own_uid: int, allow_remote: bool) -> str | None:
    """Why a peer may not register, or None: same user as spp-ctl or root; remote only if allowed."""
    if cred is None:
        if allow_remote:
            return None
        return "not a process of this host (start spp-ctl with --allow-remote-processes to accept those)"
    if cred.uid in (own_uid, 0):
        return None
    return f"its uid {cred.uid} is neither spp-ctl's ({own_uid}) nor root"
