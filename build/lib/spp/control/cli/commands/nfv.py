"""``nfv N; SUB``: commands for spp_nfv (§7.4 of the spec)."""

from __future__ import annotations

from typing import Any

from ..client import CtlError, SppCtlClient
from ..common import NFV_ADD_TYPES, CliError
from ..completion import matching, sub_tokens
from .primary import patch

__all__ = ["NFV_CMDS", "Nfv", "format_port_stats", "format_status"]

NFV_CMDS = ["status", "add", "del", "forward", "stop", "patch", "exit"]


def _port_stats(st: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-port counters if the status carries them (not part of SPP's status; optional).

    Accepts a list of ``{"port": "ring:0", "rx": .., ...}`` or a mapping ``{"ring:0": {...}}``
    under ``port_stats`` or ``stats``.
    """
    raw = st.get("port_stats", st.get("stats"))
    if isinstance(raw, dict):
        return [{"port": k, **v} for k, v in raw.items() if isinstance(v, dict)]
    if isinstance(raw, list):
        return [e for e in raw if isinstance(e, dict) and "port" in e]
    return []


def format_port_stats(stats: list[dict[str, Any]], indent: str = "    ") -> list[str]:
    """A counter table aligned like the primary's, one row per port."""
    width = max([len("port"), *(len(str(e["port"])) for e in stats)])
    head = f"{indent}{'port':<{width}}  {'rx':>10}  {'tx':>10}  {'rx_drop':>10}  {'tx_drop':>10}"
    lines = [head]
    for e in stats:
        vals = [e.get(k, "-") for k in ("rx", "tx", "rx_drop", "tx_drop")]
        lines.append(f"{indent}{e['port']!s:<{width}}  " + "  ".join(f"{v!s:>10}" for v in vals))
    return lines


def format_status(st: dict[str, Any]) -> list[str]:
    """Render ``GET /v1/nfvs/N`` as SPP does, plus a ``- stats:`` table when counters are present."""
    lines = [f"- status: {st.get('status', '-')}", "- lcore_ids:"]
    master = st.get("master-lcore")
    lcores = list(st.get("lcores") or [])
    if master is None and lcores:
        master = lcores[0]
    lines.append(f"  - master: {master}")
    slaves = [x for x in lcores if x != master]
    if len(slaves) == 1:
        lines.append(f"  - slave: {slaves[0]}")
    elif slaves:
        lines.append(f"  - slaves: {slaves}")
    lines.append("- ports:")
    dsts = {p.get("src"): p.get("dst") for p in st.get("patches") or []}
    for port in st.get("ports") or []:
        lines.append(f"  - {port} -> {dsts[port]}" if port in dsts else f"  - {port}")
    stats = _port_stats(st)
    if stats:
        lines.append("- stats:")
        lines += format_port_stats(stats)
    return lines


def _wire(port: str) -> str:
    """``phy:0 nq 1`` as shown in status -> ``phy:0nq1`` as sent."""
    return port.replace(" nq ", "nq")


class Nfv:
    """One spp_nfv, addressed by its client ID."""

    def __init__(self, client: SppCtlClient, sec_id: int) -> None:
        self.client = client
        self.sec_id = sec_id
        self.path = f"nfvs/{sec_id}"

    def status(self) -> dict[str, Any]:
        st = self.client.get(self.path)
        return st if isinstance(st, dict) else {}

    def run(self, sub: str) -> None:
        tokens = sub.split()
        cmd, params = (tokens[0], tokens[1:]) if tokens else ("", [])
        if cmd not in NFV_CMDS:
            raise CliError(f'Invalid command "{cmd}".')
        if cmd in ("status", "forward", "stop", "exit") and params:
            raise CliError(f"'{cmd}' takes no arguments, got '{' '.join(params)}'.")
        if cmd == "status":
            for line in format_status(self.status()):
                print(line)
        elif cmd == "add":
            self._add(params)
        elif cmd == "del":
            self._del(params)
        elif cmd in ("forward", "stop"):
            self.client.put(f"{self.path}/forward", {"action": "start" if cmd == "forward" else "stop"})
            print("Start forwarding." if cmd == "forward" else "Stop forwarding.")
        elif cmd == "patch":
            patch(self.client, f"{self.path}/patches", params)
        elif cmd == "exit":
            self.exit()

    def exit(self) -> None:
        self.client.delete(self.path)
        print(f"Exit nfv {self.sec_id}")

    def _add(self, params: list[str]) -> None:
        if not params:
            raise CliError("Port is required!")
        if len(params) != 1:
            raise CliError(f"Usage: add PORT (one port), got '{' '.join(params)}'.")
        port = params[0]
        if port in [_wire(p) for p in self.status().get("ports") or []]:
            raise CliError(f"'{port}' is already added.")
        self.client.put(f"{self.path}/ports", {"action": "add", "port": port})
        print(f"Add {port}.")

    def _del(self, params: list[str]) -> None:
        if not params:
            raise CliError("Port is required!")
        if len(params) != 1:
            raise CliError(f"Usage: del PORT (one port), got '{' '.join(params)}'.")
        port = params[0]
        if port.startswith("phy:"):
            raise CliError(f"Cannot delete phy port '{port}'.")
        patched = {_wire(p.get(k, "")) for p in self.status().get("patches") or [] for k in ("src", "dst")}
        if port in patched:
            raise CliError(f"Cannot delete patched port '{port}'.")
        self.client.put(f"{self.path}/ports", {"action": "del", "port": port})
        print(f"Delete {port}.")

    def complete(self, text: str, line: str, begidx: int) -> list[str]:
        words = sub_tokens(line, begidx) or []
        if not words:
            return matching(NFV_CMDS, text)
        cmd, args = words[0], words[1:]
        if cmd == "add" and not args:
            return matching([t + ":" for t in NFV_ADD_TYPES], text)
        if cmd not in ("del", "patch"):
            return []
        try:
            st = self.client.get(self.path, timeout=2.0)
        except CtlError:
            return []
        ports = [_wire(p) for p in st.get("ports") or []]
        patches = st.get("patches") or []
        if cmd == "del" and not args:
            patched = {_wire(p.get(k, "")) for p in patches for k in ("src", "dst")}
            return matching([p for p in ports if p not in patched and not p.startswith("phy:")], text)
        if cmd == "patch":
            if not args:
                return matching([*ports, "reset"] if patches else ports, text)
            if args[0] != "reset" and len(args) == 1:
                return matching(ports, text)
        return []
