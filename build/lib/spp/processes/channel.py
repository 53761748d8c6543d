"""A process's end of SPP's wire protocol: the connection to spp-ctl.

SPP processes are TCP *clients*: the primary connects to spp-ctl's port 5555, secondaries to 6666.
spp-ctl sends one bare ASCII command and waits for one reply, so one ``recv`` is one command.
spp_primary and spp_nfv pad every reply with NULs to 32768 bytes (``MSG_SIZE``); we do the same so
SPP's own spp-ctl can drive these processes. The connection is retried every second, so start
order does not matter, and re-established if spp-ctl restarts.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MSG_SIZE = 32768
RETRY_SECONDS = 1.0
CONNECT_ATTEMPTS_ENV = "SPP_CONNECT_ATTEMPTS"
"""Set by the primary's ``launch``: give up after this many failed connections (a launched
secondary that cannot reach spp-ctl will never register; it should say why and end)."""


class ControlUnreachable(OSError):
    """spp-ctl could not be reached within the allowed attempts."""


Handler = Callable[[str], Any]


def encode_reply(reply: Any, pad: bool) -> bytes:
    raw = reply.encode() if isinstance(reply, str) else json.dumps(reply, separators=(",", ":")).encode()
    if pad and len(raw) < MSG_SIZE:
        raw += b"\0" * (MSG_SIZE - len(raw))
    return raw


class ControlChannel:
    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        pad: bool = True,
        name: str = "spp",
        still_wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        self.addr = (host, port)
        self.still_wanted = still_wanted  # checked every half second, connected or not
        self.handler = handler
        self.pad = pad
        self.name = name
        self.closing = threading.Event()
        # The connection open when the process was told to close. It is never closed by us: the
        # kernel closes it when the process is gone, so spp-ctl's EOF means "exited, id free".
        self.held: socket.socket | None = None

    def serve_forever(self) -> None:
        """Connect, answer commands, reconnect on loss; return once :attr:`closing` is set."""
        warned = False
        attempts_left = int(os.environ.get(CONNECT_ATTEMPTS_ENV, "0")) or None
        while not self._should_close():
            try:
                sock = socket.create_connection(self.addr, timeout=2)
            except OSError as e:
                if attempts_left is not None:
                    attempts_left -= 1
                    if attempts_left <= 0:
                        raise ControlUnreachable(
                            f"error: cannot reach spp-ctl at {self.addr[0]}:{self.addr[1]}: {e.strerror or e}"
                        ) from None
                if not warned:
                    log.warning(
                        "%s: cannot reach spp-ctl at %s:%d (%s); retrying every %.0f s",
                        self.name,
                        *self.addr,
                        e.strerror or e,
                        RETRY_SECONDS,
                    )
                    warned = True
                self.closing.wait(RETRY_SECONDS / 2)
                continue
            warned = False
            attempts_left = None  # reached once: from now on retry for ever, as SPP's processes
            log.info("%s: connected to spp-ctl at %s:%d", self.name, *self.addr)
            try:
                self._serve(sock)
            except OSError as e:
                log.warning("%s: connection to spp-ctl lost: %s", self.name, e)
            finally:
                if self.closing.is_set() and self.held is None:
                    self.held = sock
                else:
                    sock.close()
            if not self.closing.is_set():
                time.sleep(RETRY_SECONDS)

    def _should_close(self) -> bool:
        if not self.closing.is_set() and not self.still_wanted():
            self.closing.set()
        return self.closing.is_set()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(0.5)  # wake now and then to notice closing
        while not self._should_close():
            try:
                data = sock.recv(MSG_SIZE)
            except TimeoutError:
                continue
            if not data:
                log.info("%s: spp-ctl closed the connection", self.name)
                return
            command = data.decode("ascii", "replace").strip("\0").strip()
            if not command:
                continue
            try:
                reply = self.handler(command)
            except Exception as e:  # a bug must not take the data plane down with it
                log.exception("%s: command %r failed", self.name, command)
                reply = {"result": "failed", "command": command.split()[0], "message": f"internal error: {e}"}
            sock.sendall(encode_reply(reply, self.pad))
