"""REST wrapper around spp-ctl's ``/v1`` API.

SPP's CLI looked at status codes in every command and silently ignored 400/404/500. Here every
non-2xx reply, refused connection or time-out becomes one :class:`CtlError` whose ``str()`` is the
single line to print, so commands only deal with the happy path.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "LAUNCH_TIMEOUT",
    "CtlError",
    "CtlUnreachable",
    "SppCtlClient",
    "parse_server_addr",
]

DEFAULT_PORT = 7777
#: Ordinary requests: spp-ctl answers as soon as the process replied, which is milliseconds.
DEFAULT_TIMEOUT = 5.0
#: ``PUT /v1/primary/launch``: our primary replies only once the new secondary registered.
LAUNCH_TIMEOUT = 25.0


class CtlError(Exception):
    """spp-ctl answered with an error status, or could not be asked at all.

    ``status`` is the HTTP status (``None`` when there was no reply), ``message`` the server's
    own text (SPP's spp-ctl sends plain text such as ``sec_id 3 not found.``).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return f"Error: {self.message}"


class CtlUnreachable(CtlError):
    """No TCP connection to spp-ctl; printed with SPP's own wording (§7.1)."""

    def __init__(self, addr: str) -> None:
        super().__init__(f"Is not spp-ctl running on {addr}, nor correct IP address?")
        self.addr = addr

    def __str__(self) -> str:
        return self.message


def parse_server_addr(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Parse ``ADDR[:PORT]`` as SPP does: dotted IPv4 (or ``localhost``), port 1023-65535.

    Raises ``ValueError`` with a one-line reason.
    """
    host, sep, port_s = text.strip().partition(":")
    if sep and not port_s.isdigit():
        raise ValueError(f"invalid port in '{text}'")
    port = int(port_s) if sep else default_port
    if not 1023 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1023-65535 in '{text}'")
    if host != "localhost":
        parts = host.split(".")
        if len(parts) != 4 or not all(p.isdigit() and int(p) <= 255 for p in parts):
            raise ValueError(f"invalid IPv4 address '{host}'")
    return host, port


_WIRE_QUEUE = re.compile(r"\b([a-z]+:\d+)nq(\d+)\b")


def _error_message(res: httpx.Response) -> str:
    """The server's reason as one line: plain text body, or ``message``/``error`` of a JSON body."""
    text = res.text.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            for key in ("message", "error", "detail"):
                if isinstance(obj.get(key), str):
                    text = obj[key]
                    break
    text = " ".join(text.split())
    # Processes and spp-ctl speak the wire form ``phy:0nq1``; people type and read ``phy:0 nq 1``.
    text = _WIRE_QUEUE.sub(r"\1 nq \2", text)
    if not text:
        text = f"HTTP {res.status_code} {res.reason_phrase}".strip()
    return text


class SppCtlClient:
    """One spp-ctl server (``server`` can register several and switch between them)."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._http = httpx.Client(base_url=f"http://{host}:{port}/v1", timeout=timeout)

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        """Send one request; return the decoded JSON (``None`` for 204) or raise :class:`CtlError`."""
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["json"] = body
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            res = self._http.request(method, "/" + path.lstrip("/"), **kwargs)
        except httpx.ConnectError as e:
            raise CtlUnreachable(self.addr) from e
        except httpx.TimeoutException as e:
            secs = timeout if timeout is not None else self.timeout
            raise CtlError(
                f"no reply from spp-ctl at {self.addr} within {secs:g} s ({method} /v1/{path})"
            ) from e
        except httpx.HTTPError as e:
            raise CtlError(f"request to spp-ctl at {self.addr} failed: {e}") from e
        if res.status_code >= 400:
            raise CtlError(_error_message(res), res.status_code)
        if res.status_code == 204 or not res.content:
            return None
        try:
            return res.json()
        except ValueError as e:
            raise CtlError(
                f"spp-ctl sent a reply that is not JSON ({method} /v1/{path})", res.status_code
            ) from e

    def get(self, path: str, timeout: float | None = None) -> Any:
        return self.request("GET", path, timeout=timeout)

    def put(self, path: str, body: Any, timeout: float | None = None) -> Any:
        return self.request("PUT", path, body, timeout=timeout)

    def post(self, path: str, body: Any, timeout: float | None = None) -> Any:
        return self.request("POST", path, body, timeout=timeout)

    def delete(self, path: str, timeout: float | None = None) -> Any:
        return self.request("DELETE", path, timeout=timeout)

    def processes(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """``GET /v1/processes``; a reply that is not a list is treated as empty."""
        res = self.get("processes", timeout=timeout)
        return [p for p in res if isinstance(p, dict)] if isinstance(res, list) else []

    def sec_ids(self, ptype: str, timeout: float | None = None) -> list[int]:
        """IDs of running secondaries of one type, in spp-ctl's order."""
        ids = []
        for p in self.processes(timeout=timeout):
            if p.get("type") == ptype and isinstance(p.get("client-id"), int):
                ids.append(p["client-id"])
        return ids
