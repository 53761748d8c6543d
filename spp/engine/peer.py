"""Who is at the other end of a vhost-user socket: a VM (QEMU), a container or an application.

The kernel records the credentials of a unix socket's other end when it connects (or, for a
listening peer, when it listened), and ``SO_PEERCRED`` hands them over: its pid. From
``/proc/PID`` a few cheap reads tell what it is: QEMU by its program name, with its ``-name``;
a container by the cgroup its runtime put it in (docker, podman, containerd, LXC), named by
podman's monitor (``conmon -n NAME``), else its host name or short id; anything else is an
application named after its program. This runs once per connection, on the device's control
thread, never on the packet path.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import struct

__all__ = ["describe", "peer_of"]

_UCRED = struct.Struct("3i")  # pid, uid, gid
MAX_ANCESTORS = 16  # how far up a container's monitor is looked for
#: A container runtime's cgroup: ``docker-<id>.scope``, ``libpod-<id>.scope``, ``/docker/<id>``,
#: ``cri-containerd-<id>.scope``, ``/lxc/<name>`` (and ``lxc.payload.<name>``).
_CONTAINER_CGROUP = re.compile(
    r"(?:docker|libpod|crio|cri-containerd|containerd)[-/]([0-9a-f]{12,64})|lxc(?:\.payload)?[./]([^/\s]+)"
)


def peer_of(sock: socket.socket) -> dict[str, object] | None:
    """The peer process of a connected unix socket, as :func:`describe` says; None if unknown
    (no pid, e.g. a peer in another PID namespace, or the socket already closed)."""
    try:
        pid, _uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError:
        return None
    return describe(pid) if pid > 0 else None


def describe(pid: int) -> dict[str, object]:
    """``{"pid", "kind": "vm"|"container"|"app", "name", "program"}`` of a running process; only
    ``pid`` and ``kind: app`` when its ``/proc`` entries cannot be read."""
    argv = _read(f"/proc/{pid}/cmdline").split("\0")
    program = os.path.basename(argv[0]) if argv and argv[0] else _read(f"/proc/{pid}/comm").strip()
    out: dict[str, object] = {"pid": pid, "kind": "app", "name": program or str(pid), "program": program}
    if program.startswith("qemu"):
        out["kind"] = "vm"
        out["name"] = _qemu_name(argv) or f"qemu {pid}"
        return out
    match = _CONTAINER_CGROUP.search(_read(f"/proc/{pid}/cgroup"))
    if match:
        out["kind"] = "container"
        out["name"] = _conmon_name(pid) or match.group(2) or _hostname(pid) or (match.group(1) or "")[:12]
    return out


def _qemu_name(argv: list[str]) -> str:
    """QEMU's ``-name NAME`` or ``-name guest=NAME,debug-threads=on``."""
    for flag, value in itertools.pairwise(argv):
        if flag in ("-name", "--name"):
            first = value.split(",", 1)[0]
            return first.removeprefix("guest=")
    return ""


def _conmon_name(pid: int) -> str:
    """A podman container's name: its monitor process (conmon, an ancestor of every process of
    the container) carries it as ``-n NAME``; "" if there is none."""
    for _ in range(MAX_ANCESTORS):
        stat = _read(f"/proc/{pid}/stat")
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) < 2 or not fields[1].isdigit() or int(fields[1]) <= 1:
            return ""
        pid = int(fields[1])
        argv = _read(f"/proc/{pid}/cmdline").split("\0")
        if os.path.basename(argv[0]) == "conmon":
            for flag, value in itertools.pairwise(argv):
                if flag in ("-n", "--name"):
                    return value
            return ""
    return ""


def _hostname(pid: int) -> str:
    """The container's host name (docker's and podman's default is the short id, unless given
    one), from the environment its runtime gave it; "" if not readable."""
    for item in _read(f"/proc/{pid}/environ").split("\0"):
        if item.startswith("HOSTNAME="):
            return item[len("HOSTNAME=") :]
    return ""


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(65536).decode("utf-8", "replace").rstrip("\0")
    except OSError:
        return ""
