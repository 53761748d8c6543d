"""The agent's REST calls to spp-ctl: the original agent's requests (spec §3.3), each one only
when the live status says it is needed, so any step can be repeated after a crash."""

from __future__ import annotations

from typing import Any

import httpx


class SppCtlUnavailable(RuntimeError):
    """spp-ctl does not answer, or the process asked for is not registered (yet, or any more)."""


class SppCtlError(RuntimeError):
    """spp-ctl refused a request (4xx): the configuration does not fit the processes."""


class Proc:
    """One spp_vf (``/v1/vfs/N``) or spp_mirror (``/v1/mirrors/N``)."""

    def __init__(self, ctl: SppCtl, kind: str, client_id: int) -> None:
        self.ctl, self.kind, self.client_id = ctl, kind, client_id
        self.base = f"/v1/{kind}s/{client_id}"

    def __str__(self) -> str:
        return f"spp_{self.kind} {self.client_id}"

    async def status(self) -> dict[str, Any]:
        return await self.ctl.request("GET", self.base, what=str(self))

    async def start(self, name: str, core: int, comp_type: str) -> None:
        body = {"name": name, "core": core, "type": comp_type}
        await self.ctl.request("POST", f"{self.base}/components", body, what=str(self))

    async def attach(self, port: str, direction: str, comp: str, vlan: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"action": "attach", "port": port, "dir": direction}
        if vlan is not None:
            body["vlan"] = vlan
        await self.ctl.request("PUT", f"{self.base}/components/{comp}/ports", body, what=str(self))

    async def detach(self, port: str, direction: str, comp: str) -> None:
        body = {"action": "detach", "port": port, "dir": direction}
        await self.ctl.request("PUT", f"{self.base}/components/{comp}/ports", body, what=str(self))

    async def table(self, action: str, mac: str, port: str, vlan: int | None) -> None:
        body: dict[str, Any] = {"action": action, "type": "mac", "mac_address": mac, "port": port}
        if vlan is not None:
            body.update(type="vlan", vlan=vlan)
        await self.ctl.request("PUT", f"{self.base}/classifier_table", body, what=str(self))


class SppCtl:
    def __init__(self, api: str, timeout: float = 10.0) -> None:
        self.api = api
        self.http = httpx.AsyncClient(base_url=f"http://{api}", timeout=timeout)

    async def close(self) -> None:
        await self.http.aclose()

    def vf(self, client_id: int) -> Proc:
        return Proc(self, "vf", client_id)

    def mirror(self, client_id: int) -> Proc:
        return Proc(self, "mirror", client_id)

    async def processes(self) -> list[dict[str, Any]]:
        return await self.request("GET", "/v1/processes", what="spp-ctl")

    async def request(self, method: str, path: str, body: Any = None, what: str = "spp-ctl") -> Any:
        try:
            r = await self.http.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise SppCtlUnavailable(f"spp-ctl at {self.api}: {e or type(e).__name__}") from e
        if r.status_code == 404 or r.status_code >= 500:
            raise SppCtlUnavailable(f"{what}: {method} {path} -> {r.status_code} {r.text.strip()}")
        if r.status_code >= 400:
            raise SppCtlError(f"{what}: {method} {path} {body or ''} -> {r.status_code} {r.text.strip()}")
        return None if r.status_code == 204 or not r.content else r.json()


# -- reading a status --------------------------------------------------------------------------


def components(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Running components by name (``unuse`` cores have no name and are left out)."""
    return {c["name"]: c for c in status.get("components", []) if c.get("name")}


def ports_of(comp: dict[str, Any] | None, direction: str) -> list[str]:
    if comp is None:
        return []
    return [p["port"] for p in comp.get(f"{direction}_port", [])]


def vlan_of(comp: dict[str, Any] | None, port: str, direction: str) -> dict[str, Any] | None:
    """The VLAN operation on ``port`` of ``comp`` (``{"operation": ...}``), None if absent."""
    for p in (comp or {}).get(f"{direction}_port", []):
        if p["port"] == port:
            return p.get("vlan") or {"operation": "none"}
    return None


def table_entries(status: dict[str, Any], port: str) -> list[tuple[str, int | None]]:
    """Classifier entries sending to ``port``: ``(mac lower-case, vid or None)``."""
    out: list[tuple[str, int | None]] = []
    for e in status.get("classifier_table", []):
        if e.get("port") != port:
            continue
        if e.get("type") == "vlan":
            vid, _, mac = str(e.get("value", "")).partition("/")
            out.append((mac.lower(), int(vid) if vid.isdigit() else None))
        else:
            out.append((str(e.get("value", "")).lower(), None))
    return out
