"""Who may talk to the REST API from a browser: ``Host`` and ``Origin`` checks (aiohttp middleware).

The API has no authentication and ``PUT /v1/primary/launch`` starts programs, so a web page the
user happens to open must not be able to reach it:

* **DNS rebinding**: a page on ``evil.example`` re-points its name to 127.0.0.1 and then talks to
  spp-ctl as "same origin". The browser still sends ``Host: evil.example``, so a request is served
  only if its ``Host`` is an IP literal, ``localhost``, or a name given with ``--allow-host``.
  Requests without ``Host`` (HTTP/1.0 tools) come from no browser and are served.
* **CSRF**: a page elsewhere submits a form or ``fetch`` to ``http://127.0.0.1:7777``. Browsers
  mark such requests with ``Origin`` (and ``Sec-Fetch-Site``); a state-changing request (anything
  but GET/HEAD/OPTIONS) is refused when its ``Origin`` is not the API's own origin (the ``Host``
  it was sent to) or one given with ``--allow-origin``. ``Origin: null`` (sandboxed frames, file
  pages) is foreign. Command-line clients (curl, the SPP CLI, networking-spp) send no ``Origin``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` header -> (lower-case host without brackets, port or None); None if malformed."""
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return host.lower(), port


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostPolicy:
    """The names and origins the API answers to."""

    def __init__(self, hosts: Iterable[str] = (), origins: Iterable[str] = ()) -> None:
        self.hosts = frozenset(h.lower().strip("[]") for h in hosts) | {"localhost"}
        self.origins = frozenset(o.lower().rstrip("/") for o in origins)

    def host_allowed(self, host: str) -> bool:
        return host in self.hosts or is_ip_literal(host)

    def check(self, request: web.Request) -> str | None:
        """Why the request is refused, or None if it may be served."""
        raw_host = request.headers.get("Host")
        own_origins: set[str] = set()
        if raw_host is not None:
            parsed = split_host(raw_host)
            if parsed is None:
                return f"malformed Host header {raw_host!r}"
            host, _port = parsed
            if not self.host_allowed(host):
                return (
                    f"Host {host!r} is not served: use an IP address or localhost, or start spp-ctl "
                    f"with --allow-host {host}"
                )
            own_origins = {f"http://{raw_host.lower()}", f"https://{raw_host.lower()}"}
        if request.method in SAFE_METHODS:
            return None
        origin = request.headers.get("Origin")
        if origin is not None:
            origin = origin.lower().rstrip("/")
            if origin not in own_origins and origin not in self.origins:
                return (
                    f"cross-origin request from Origin {origin!r} refused (allow it with "
                    f"--allow-origin {origin})"
                )
        elif request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            return "cross-site request refused (Sec-Fetch-Site: cross-site)"
        return None

    def middleware(self) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        @web.middleware
        async def host_origin_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            reason = self.check(request)
            if reason is not None:
                return web.Response(
                    status=403, body=f"Forbidden: {reason}.".encode(), headers={"Content-Type": "text/plain"}
                )
            return await handler(request)

        return host_origin_guard
