"""vhost-user messages on a UNIX stream socket: a 12-byte header, a payload, passed descriptors.

Every receive is bounded (header, then at most :data:`MAX_PAYLOAD` bytes) and every malformed
message raises :class:`ProtocolError`, so a peer sending garbage costs its connection, nothing
more. Descriptors that arrive with a message are owned by the :class:`Message` and closed by
:meth:`Message.close_fds` unless a handler took them.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
from dataclasses import dataclass, field

from spp.engine.virtio.defs import FLAG_NEED_REPLY, FLAG_REPLY, HEADER_SIZE, MAX_PAYLOAD, MAX_REGIONS, VERSION

_HEADER = struct.Struct("<III")
_FDS_SPACE = socket.CMSG_SPACE(MAX_REGIONS * 4)


class ProtocolError(Exception):
    """The peer broke the protocol; the connection is closed."""


class PeerGone(Exception):
    """The peer closed the connection."""


@dataclass
class Message:
    request: int
    flags: int
    payload: bytes
    fds: list[int] = field(default_factory=list)

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & FLAG_NEED_REPLY)

    def u64(self) -> int:
        if len(self.payload) < 8:
            raise ProtocolError(f"request {self.request}: payload of {len(self.payload)} bytes, expected 8")
        return struct.unpack_from("<Q", self.payload)[0]

    def take_fd(self) -> int | None:
        return self.fds.pop(0) if self.fds else None

    def close_fds(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        data = sock.recv(n)
        if not data:
            raise PeerGone("peer closed the connection")
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> Message:
    """Read one message (blocking). Raises PeerGone at EOF, ProtocolError on garbage."""
    fds = array.array("i")
    data, ancdata, msg_flags, _ = sock.recvmsg(HEADER_SIZE, _FDS_SPACE)
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
    fd_list = list(fds)
    try:
        if not data:
            raise PeerGone("peer closed the connection")
        if msg_flags & socket.MSG_CTRUNC:
            raise ProtocolError("more file descriptors than any request carries")
        if len(data) < HEADER_SIZE:
            data += _recv_exact(sock, HEADER_SIZE - len(data))
        request, flags, size = _HEADER.unpack(data)
        if flags & 0x3 != VERSION:
            raise ProtocolError(f"bad header (version {flags & 3}, request {request}): not vhost-user")
        if size > MAX_PAYLOAD:
            raise ProtocolError(f"request {request}: payload of {size} bytes exceeds {MAX_PAYLOAD}")
        payload = _recv_exact(sock, size) if size else b""
    except BaseException:
        for fd in fd_list:
            os.close(fd)
        raise
    return Message(request, flags, payload, fd_list)


def send_message(
    sock: socket.socket, request: int, payload: bytes = b"", fds: list[int] | None = None, flags: int = 0
) -> None:
    data = _HEADER.pack(request, VERSION | flags, len(payload)) + payload
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])
    else:
        sock.sendall(data)


def send_reply(sock: socket.socket, request: int, payload: bytes) -> None:
    send_message(sock, request, payload, flags=FLAG_REPLY)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)
