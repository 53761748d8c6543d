"""The web page (``spp-ctl --web``) and ``/metrics``, on the REST API's address and port.

* ``GET /`` (only with ``--web``; 404 otherwise): the page, with its script and style sheet under
  ``/web/``; every asset comes from here (no CDN), so it works without internet.
* ``GET /web/ws``: a websocket. The server pushes ``{"type": "topology", ...}`` (the SVG drawing
  and each process's ports and patches) when anything drawn changed, and ``{"type": "rates",
  ...}`` (pps, bit/s, drops per node) every :data:`PUSH_INTERVAL` seconds. The page sends
  ``{"type": "refresh"}`` after it changed something, to see it at once; anything else it
  could send is ignored. The page changes things through the REST API itself (``fetch``), so
  the same checks apply, and a patch made elsewhere shows up in the next push. Messages over
  :data:`MAX_MESSAGE` bytes, binary ones and bad JSON are ignored too; only one over
  :data:`MAX_READ` closes the socket, with code 1009 (message too big).
* ``GET /metrics``: Prometheus text (:mod:`.metrics`), with or without ``--web``.

The Host and Origin checks of :mod:`.httpguard` apply to all of it; the websocket handshake is a
GET, but a cross-origin one is refused like a state-changing request, since the page's data is
the panel's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from importlib import resources
from typing import Any

from aiohttp import WSMsgType, web

from spp.control.view.model import Graph, build_graph, port_counters
from spp.control.view.rates import rates
from spp.control.view.svg import process_colors, render_svg

from .errors import ErrorCounts
from .metrics import CONTENT_TYPE_LATEST, render_metrics
from .observe import collect
from .registry import Registry

LOG = logging.getLogger(__name__)

PUSH_INTERVAL = 1.0
#: The page's messages are a few bytes; a longer one is read and ignored, like any other
#: message the page would not send.
MAX_MESSAGE = 4096
#: What is read at all: a longer message can only be ignored by reading it, so past this the
#: socket is closed with 1009 (message too big) rather than buffering without end.
MAX_READ = 1 << 20
ASSETS = {"app.js": "application/javascript", "app.css": "text/css", "index.html": "text/html"}


def _asset(name: str) -> bytes:
    return resources.files("spp.control.ctl").joinpath("static", name).read_bytes()


def topology_message(graph: Graph) -> dict[str, Any]:
    colors = process_colors(graph)
    return {
        "type": "topology",
        "svg": render_svg(graph),
        "processes": [
            {
                "name": p.name,
                "type": p.type,
                "id": p.client_id,
                "state": p.state,
                "ports": p.ports,
                "patches": p.patches,
                "patchable": p.patchable,
                "color": colors.get(p.name),
            }
            for p in graph.procs
        ],
        "nodes": [{"id": n.id, "label": n.label, "kind": n.kind} for n in graph.nodes.values()],
    }


class WebViews:
    """Handlers of the page, its websocket and /metrics."""

    def __init__(self, registry: Registry, errors: ErrorCounts) -> None:
        self.registry = registry
        self.errors = errors
        self._assets = {name: _asset(name) for name in ASSETS}

    async def index(self, request: web.Request) -> web.Response:
        return self._serve("index.html")

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS or name == "index.html":
            raise web.HTTPNotFound()
        return self._serve(name)

    def _serve(self, name: str) -> web.Response:
        return web.Response(
            body=self._assets[name],
            headers={
                "Content-Type": f"{ASSETS[name]}; charset=utf-8",
                "Cache-Control": "no-cache",
                # Everything the page uses comes from here; nothing else may run in it.
                "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def metrics(self, request: web.Request) -> web.Response:
        snap, pids = await collect(self.registry)
        body = render_metrics(snap, pids, self.errors)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_READ)
        await ws.prepare(request)
        refresh = asyncio.Event()
        pusher = asyncio.create_task(self._push(ws, refresh))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if len(msg.data) > MAX_MESSAGE:
                    LOG.debug("web: ignored a message of %d characters", len(msg.data))
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    LOG.debug("web: ignored a message that is not JSON")
                    continue
                if isinstance(data, dict) and data.get("type") == "refresh":
                    refresh.set()
                else:
                    LOG.debug("web: ignored message %.80r", msg.data)
        finally:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher
        return ws

    async def _push(self, ws: web.WebSocketResponse, refresh: asyncio.Event) -> None:
        last_sig: Any = None
        prev: dict[str, dict[str, int]] | None = None
        t_prev = 0.0
        try:
            while not ws.closed:
                snap, _pids = await collect(self.registry)
                now = time.monotonic()
                graph = build_graph(snap)
                sig = graph.signature()
                if sig != last_sig:
                    await ws.send_json(topology_message(graph))
                    last_sig = sig
                counters = port_counters(snap)
                await ws.send_json(
                    {
                        "type": "rates",
                        "interval": now - t_prev if prev else None,
                        "nodes": rates(prev, counters, now - t_prev),
                    }
                )
                prev, t_prev = counters, now
                refresh.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(refresh.wait(), PUSH_INTERVAL)
        except (ConnectionError, RuntimeError) as exc:  # the page went away mid-send
            LOG.debug("web: websocket closed: %s", exc)


def add_routes(app: web.Application, registry: Registry, errors: ErrorCounts, page: bool) -> None:
    views = WebViews(registry, errors)
    app.router.add_get("/metrics", views.metrics)
    if page:
        app.router.add_get("/", views.index)
        app.router.add_get("/web/ws", views.websocket)
        app.router.add_get("/web/{name}", views.asset)
