"""The three listeners of spp-ctl and what happens when a process connects.

* primary port (5555): no handshake — whoever connects is the primary (spp-api.md §4.2);
* secondary port (6666): spp-ctl asks ``_get_client_id`` at once and registers the process under
  the type and ID it reports, or closes the connection;
* REST port (7777): :mod:`spp.control.ctl.webapi`.

All on one asyncio loop; ``SO_REUSEADDR`` on every listener so a restarted spp-ctl can rebind at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from aiohttp import web

from .registry import Registry
from .webapi import make_app
from .wire import Connection, ConnectionClosed, ReplyTimeout, parse_client_id_reply

LOG = logging.getLogger(__name__)

REGISTER_TIMEOUT = 5.0
"""Time a new secondary gets to answer ``_get_client_id``."""


@dataclass
class Config:
    """Where to listen and how patient to be with processes."""

    bind_addr: str = "127.0.0.1"
    pri_port: int = 5555
    sec_port: int = 6666
    api_port: int = 7777
    command_timeout: float = 10.0
    launch_timeout: float = 20.0


class Controller:
    """Owns the registry and the listeners; :meth:`run` serves until stopped."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = Registry(
            command_timeout=config.command_timeout,
            launch_timeout=config.launch_timeout,
            probe_timeout=min(5.0, config.command_timeout),
        )
        self._servers: list[asyncio.Server] = []
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()

    async def accept_primary(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.registry.set_primary(Connection(reader, writer, label="primary"))

    async def accept_secondary(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer)
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

    async def start(self) -> None:
        """Bind all three listeners (raises OSError if a port is taken)."""
        cfg = self.config
        self._servers.append(
            await asyncio.start_server(self.accept_primary, cfg.bind_addr, cfg.pri_port, reuse_address=True)
        )
        self._servers.append(
            await asyncio.start_server(self.accept_secondary, cfg.bind_addr, cfg.sec_port, reuse_address=True)
        )
        self._runner = web.AppRunner(make_app(self.registry), access_log=None, handle_signals=False)
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
