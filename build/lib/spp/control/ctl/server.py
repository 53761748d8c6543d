"""The three listeners of spp-ctl and what happens when a process connects.

* primary port (5555): no handshake — the connection is the primary (spp-api.md §4.2) unless a
  live primary is registered;
* secondary port (6666): spp-ctl asks ``_get_client_id`` at once and registers the process under
  the type and ID it reports, or closes the connection;
* REST port (7777): :mod:`spp.control.ctl.webapi`.

Who may register (both wire ports): a process of this host running as spp-ctl's user or root,
found by its socket in the kernel's tables (:mod:`.peercred`); others are closed at once, before
they are sent anything. Peers on other hosts only with ``--allow-remote-processes``. Connections
that have not registered yet are capped (:data:`MAX_PENDING`, :data:`REGISTER_TIMEOUT`) and may
buffer :data:`~.wire.PENDING_MAX_REPLY` bytes, so a flood of idle connections costs little.

All on one asyncio loop; ``SO_REUSEADDR`` on every listener so a restarted spp-ctl can rebind at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass

from aiohttp import web

from . import peercred
from .httpguard import HostPolicy
from .registry import Registry
from .webapi import make_app
from .wire import (
    MAX_REPLY,
    PENDING_MAX_REPLY,
    Connection,
    ConnectionClosed,
    ReplyTimeout,
    parse_client_id_reply,
)

LOG = logging.getLogger(__name__)

REGISTER_TIMEOUT = 5.0
"""Time a new secondary gets to answer ``_get_client_id``."""

MAX_PENDING = 64
"""Connections (both wire ports together) that may be registering at the same time; more are closed."""


@dataclass
class Config:
    """Where to listen and how patient to be with processes."""

    bind_addr: str = "127.0.0.1"
    pri_port: int = 5555
    sec_port: int = 6666
    api_port: int = 7777
    command_timeout: float = 10.0
    launch_timeout: float = 20.0
    allow_remote_processes: bool = False
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    max_pending: int = MAX_PENDING


class Controller:
    """Owns the registry and the listeners; :meth:`run` serves until stopped."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = Registry(
            command_timeout=config.command_timeout,
            launch_timeout=config.launch_timeout,
            probe_timeout=min(5.0, config.command_timeout),
        )
        self._pending: set[asyncio.StreamWriter] = set()
        self._uid = os.geteuid()
        self._servers: list[asyncio.Server] = []
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def _admit(self, writer: asyncio.StreamWriter, port: str) -> peercred.PeerCred | bool | None:
        """Check a new wire connection; False (and closed) if refused, else the peer's credentials."""
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        if len(self._pending) >= self.config.max_pending:
            LOG.warning(
                "Refused a %s connection from %s: %d connections are already registering",
                port, where, len(self._pending),
            )  # fmt: skip
            writer.close()
            return False
        sock = writer.get_extra_info("socket")
        cred = peercred.lookup(sock) if sock is not None else None
        reason = peercred.may_register(cred, self._uid, self.config.allow_remote_processes)
        if reason is not None:
            LOG.warning("Refused a %s connection from %s: %s", port, where, reason)
            writer.close()
            return False
        return cred

    def _registered(self, conn: Connection, cred: peercred.PeerCred | None) -> None:
        """A process was accepted: full reply size, and its pid looked up (to see it stopped)."""
        conn.reply_limit = MAX_REPLY
        if cred is not None:
            task = asyncio.get_running_loop().create_task(self._find_pid(conn, cred.inode))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _find_pid(conn: Connection, inode: int) -> None:
        conn.pid = await asyncio.to_thread(peercred.find_pid, inode)
        LOG.debug("%s: process id %s", conn.label, conn.pid)

    async def accept_primary(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cred = self._admit(writer, "primary")
        if cred is False:
            return
        self._pending.add(writer)
        try:
            conn = Connection(reader, writer, label="primary?", reply_limit=PENDING_MAX_REPLY)
            if await self.registry.register_primary(conn) is None:
                conn.close()
                return
            self._registered(conn, cred or None)
        finally:
            self._pending.discard(writer)

    async def accept_secondary(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cred = self._admit(writer, "secondary")
        if cred is False:
            return
        self._pending.add(writer)
        try:
            await self._register_secondary(
                Connection(reader, writer, reply_limit=PENDING_MAX_REPLY), cred or None
            )
        finally:
            self._pending.discard(writer)

    async def _register_secondary(self, conn: Connection, cred: peercred.PeerCred | None) -> None:
        LOG.debug("secondary connection from %s: asking its id", conn.peer)
        try:
            reply = await conn.request("_get_client_id", REGISTER_TIMEOUT)
        except (ConnectionClosed, ReplyTimeout) as exc:
            LOG.warning("secondary from %s did not identify itself: %s", conn.peer, exc)
            conn.close()
            return
        ident = parse_client_id_reply(reply)
        if ident is None:
            LOG.error("secondary from %s: bad reply to _get_client_id: %.200r; closing", conn.peer, reply)
            conn.close()
            return
        if await self.registry.register_secondary(conn, ident) is None:
            conn.close()
            return
        self._registered(conn, cred)

    async def start(self) -> None:
        """Bind all three listeners (raises OSError if a port is taken)."""
        cfg = self.config
        self._servers.append(
            await asyncio.start_server(self.accept_primary, cfg.bind_addr, cfg.pri_port, reuse_address=True)
        )
        self._servers.append(
            await asyncio.start_server(self.accept_secondary, cfg.bind_addr, cfg.sec_port, reuse_address=True)
        )
        policy = HostPolicy(cfg.allowed_hosts, cfg.allowed_origins)
        self._runner = web.AppRunner(make_app(self.registry, policy), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.bind_addr, cfg.api_port, reuse_address=True)
        await site.start()
        LOG.info(
            "spp-ctl listening on %s: primary %d, secondary %d, REST %d",
            cfg.bind_addr, cfg.pri_port, cfg.sec_port, cfg.api_port,
        )  # fmt: skip

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Start, serve until SIGINT/SIGTERM or :meth:`stop`, then close everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        try:
            await self.start()
            await self._stop.wait()
            LOG.info("spp-ctl shutting down")
        finally:
            await self.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self.registry.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
        for server in self._servers:
            await server.wait_closed()
