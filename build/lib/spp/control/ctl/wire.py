"""SPP's wire protocol, spp-ctl side: one TCP connection per process, command in, reply out.

The protocol has no framing at all (spp-api.md §4.1): spp-ctl sends the bare ASCII command in one
``send`` (no newline, no NUL) and the process answers once. What a reply looks like depends on who
sent it:

* spp_primary / spp_nfv (C) send exactly ``MSG_SIZE`` = 32768 bytes — the JSON text followed by NUL
  padding — and TCP may deliver it in several pieces.
* spp_vf / spp_mirror / spp_pcap (C) send the bare JSON text, no padding.
* For ``patch reset`` the C primary/nfv send no JSON at all: the echoed, strtok-mangled command
  (``patch\\0reset`` + NULs). Some other failures echo the command too.
* Our Python processes may send either padded or unpadded JSON.

:class:`ReplyFramer` therefore decides when a reply is complete: as soon as the text (NULs removed)
parses as a JSON object/array; or when 32768 bytes of a padded or non-JSON reply have arrived; or,
for text that does not even look like JSON, after a short quiet period. A non-JSON reply is handed
back as a string — it is not an error at this layer.

:class:`Connection` keeps a reader task running for the whole life of the socket, so a process
that dies is noticed at once (EOF) even when nobody is talking to it — SPP only found out at the
next command. One command at a time per process (``lock``), as in SPP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import peercred

LOG = logging.getLogger(__name__)

MSG_SIZE = 32768
"""Reply size of the C primary/nfv (``MSG_SIZE`` in SPP's C sources)."""

QUIET_PERIOD = 0.25
"""How long a reply that does not look like JSON may pause before we take it as complete."""

MAX_REPLY = 16 * 1024 * 1024
"""Upper bound for one reply of a registered process; protects spp-ctl's memory from one gone mad."""

PENDING_MAX_REPLY = 2 * MSG_SIZE
"""What a connection may buffer before it has registered: a padded ``_get_client_id`` reply is
32768 bytes, nothing a registration needs is bigger. Anyone may connect, so this is what bounds
the memory a connection costs (``MAX_REPLY`` applies once the process has been accepted)."""

SECONDARY_TYPES = ("vf", "nfv", "mirror", "pcap")
"""Process types a secondary may announce, in the order SPP's spp-ctl tried them."""

_FILLER = b"\0 \t\r\n"
"""Bytes that may surround a reply's JSON text: NUL padding and whitespace."""

Reply = dict[str, Any] | list[Any] | str
"""A decoded reply: JSON object/array, or the raw text (NULs removed) if it was not JSON."""


class ConnectionClosed(Exception):
    """The peer closed the connection (or it broke) before a complete reply arrived."""


class ReplyTimeout(Exception):
    """The peer did not complete its reply within the allowed time."""


class ReplyFramer:
    """Decides where one reply ends. Pure logic, fed with whatever bytes arrive.

    Leading NULs are skipped: they are the tail of the previous padded reply whose JSON had already
    parsed (we stop reading at the first parse, the padding can trail behind).
    """

    def __init__(self, limit: int = MAX_REPLY) -> None:
        self._frame = bytearray()
        self._saw_nul = False
        self._limit = limit

    @property
    def empty(self) -> bool:
        return not self._frame

    def text(self) -> str:
        """The reply so far as text, NULs removed (SPP's spp-ctl did the same)."""
        return self._frame.replace(b"\0", b"").decode("utf-8", "replace")

    def _looks_like_json(self) -> bool:
        for byte in self._frame:
            if byte not in _FILLER:
                return byte in b"{["
        return False

    def _ends_like_json(self) -> bool:
        """Cheap pre-check before parsing: does the text end with ``}`` or ``]`` (padding aside)?"""
        frame = self._frame
        i = len(frame) - 1
        while i >= 0 and frame[i] in _FILLER:
            i -= 1
        return i >= 0 and frame[i] in b"}]"

    def feed(self, data: bytes) -> tuple[bool, Reply | None]:
        """Add received bytes; return ``(True, reply)`` once the reply is complete."""
        if not self._frame:
            data = data.lstrip(b"\0")
            if not data:
                return False, None
        if b"\0" in data:
            self._saw_nul = True
        self._frame += data
        if self._ends_like_json():
            try:
                value = json.loads(self.text())
            except ValueError:
                pass
            else:
                if isinstance(value, dict | list):
                    return True, value
        if len(self._frame) >= MSG_SIZE and (self._saw_nul or not self._looks_like_json()):
            return True, self.text()
        if len(self._frame) > self._limit:
            return True, self.text()
        return False, None

    def quiet_timeout(self) -> float | None:
        """Seconds of silence after which the reply counts as complete, or None to keep waiting.

        Only text that cannot be JSON gets a quiet period (e.g. an echoed command); a partial JSON
        text keeps waiting for the rest, bounded by the command timeout.
        """
        if not self._frame or self._looks_like_json():
            return None
        return QUIET_PERIOD

    def finish(self) -> Reply | None:
        """The reply when no more data will come (quiet period over, or EOF), if there is one."""
        if not self._frame or self._looks_like_json():
            return None
        return self.text()


class Connection:
    """One process's TCP connection: serialized request/reply plus an always-running reader.

    ``label`` names the process in log messages (``nfv(1)``); it is set once the process has
    identified itself.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        label: str = "",
        reply_limit: int = MAX_REPLY,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.reply_limit = reply_limit
        """Most bytes buffered for one reply; raised to ``MAX_REPLY`` once the process registered."""
        self.pid: int | None = None
        """The peer's process id when it runs on this host and could be found (see :mod:`.peercred`)."""
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self.label = label or f"process@{self.peer}"
        self.lock = asyncio.Lock()
        self._sent_at: float | None = None
        self._buf = bytearray()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._closed_event = asyncio.Event()
        self._close_callbacks: list[Callable[[Connection], None]] = []
        self._task = asyncio.get_running_loop().create_task(
            self._read_loop(), name=f"wire-reader-{self.peer}"
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def busy_for(self) -> float:
        """Seconds the reply to the command in flight has been awaited (0 when idle)."""
        sent = self._sent_at
        return 0.0 if sent is None else time.monotonic() - sent

    @property
    def stopped(self) -> bool:
        """Is the peer process stopped (SIGSTOP, a debugger)? It cannot answer until resumed."""
        return self.pid is not None and not self._closed and peercred.is_stopped(self.pid)

    def add_close_callback(self, callback: Callable[[Connection], None]) -> None:
        """Call ``callback(self)`` once the connection is gone (at once if it already is)."""
        if self._closed:
            callback(self)
        else:
            self._close_callbacks.append(callback)

    async def _read_loop(self) -> None:
        """Collect everything the peer sends; notice EOF/reset immediately, even when idle."""
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    LOG.debug("%s: EOF", self.label)
                    break
                self._buf += data
                if len(self._buf) > self.reply_limit and not self.lock.locked():
                    LOG.warning("%s: dropping %d unsolicited bytes", self.label, len(self._buf))
                    self._buf.clear()
                self._wakeup.set()
        except (ConnectionError, OSError) as exc:
            LOG.debug("%s: connection broken: %s", self.label, exc)
        finally:
            self._mark_closed()

    def _mark_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closed_event.set()
        self._wakeup.set()
        with contextlib.suppress(Exception):
            self._writer.close()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                LOG.exception("%s: close callback failed", self.label)

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until the peer has closed the connection; False if it is still open after ``timeout``."""
        try:
            await asyncio.wait_for(self._closed_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Close the socket; the reader task ends by itself and the close callbacks run now."""
        self._mark_closed()

    async def request(self, command: str, timeout: float) -> Reply:
        """Send ``command`` and return its reply; waits its turn behind other commands.

        ``timeout`` bounds the wait for the reply only, not the wait for the lock: a status query
        queued behind a 20 s launch must not make the primary look dead.
        """
        async with self.lock:
            return await self.request_locked(command, timeout)

    async def request_locked(self, command: str, timeout: float) -> Reply:
        """As :meth:`request`, for a caller that already holds :attr:`lock`."""
        if self._closed:
            raise ConnectionClosed(f"{self.label}: connection closed")
        stale = bytes(self._buf).strip(b"\0")
        if stale:
            LOG.warning("%s: discarding %d unexpected bytes: %r", self.label, len(stale), stale[:80])
        self._buf.clear()
        LOG.debug("%s: send %r", self.label, command)
        try:
            self._writer.write(command.encode())
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self.close()
            raise ConnectionClosed(f"{self.label}: send failed: {exc}") from exc
        self._sent_at = time.monotonic()
        try:
            reply = await asyncio.wait_for(self._read_reply(), timeout)
        except TimeoutError as exc:
            raise ReplyTimeout(f"{self.label}: no reply to {command!r} within {timeout:g} s") from exc
        except asyncio.CancelledError:
            # The reply may still arrive and would be taken for the next command's: give up the link.
            self.close()
            raise
        finally:
            self._sent_at = None
        if isinstance(reply, str):
            LOG.debug("%s: raw reply %r", self.label, reply[:200])
        else:
            LOG.debug("%s: reply %s", self.label, json.dumps(reply)[:1000])
        return reply

    async def _read_reply(self) -> Reply:
        framer = ReplyFramer(self.reply_limit)
        while True:
            if self._buf:
                data = bytes(self._buf)
                self._buf.clear()
                done, reply = framer.feed(data)
                if done:
                    assert reply is not None
                    return reply
                continue
            if self._closed:
                reply = framer.finish()
                if reply is None:
                    raise ConnectionClosed(f"{self.label}: connection closed before the reply was complete")
                return reply
            self._wakeup.clear()
            quiet = framer.quiet_timeout()
            try:
                await asyncio.wait_for(self._wakeup.wait(), quiet)
            except TimeoutError:
                reply = framer.finish()
                if reply is not None:
                    return reply


@dataclass(frozen=True)
class Identity:
    """What a secondary said about itself in its ``_get_client_id`` reply."""

    type: str
    id: int


def parse_client_id_reply(reply: Reply) -> Identity | None:
    """Decode a ``_get_client_id`` reply (§4.2); None if it does not name a valid secondary.

    ID 0 is the primary's key and is refused, as are non-integers (a bool is not an ID).
    """
    if not isinstance(reply, dict):
        return None
    proc_type = reply.get("process_type")
    client_id = reply.get("client_id")
    if proc_type not in SECONDARY_TYPES:
        return None
    if isinstance(client_id, str) and client_id.isascii() and client_id.isdigit():
        client_id = int(client_id)
    if not isinstance(client_id, int) or isinstance(client_id, bool) or client_id < 1:
        return None
    return Identity(proc_type, client_id)
