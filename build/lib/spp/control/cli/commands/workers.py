"""``vf N;``, ``mirror N;`` and ``pcap N;``: the worker-style secondaries (§7.4 of the spec).

Their processes come later; this module only speaks spp-ctl's REST API for them (§3.6-3.8) and
renders their status the way SPP's CLI did.
"""

from __future__ import annotations

from typing import Any

from ..client import CtlError, SppCtlClient
from ..common import WORKER_PORT_TYPES, CliError, join_nq
from ..completion import matching, sub_tokens

__all__ = [
    "MIRROR_CMDS",
    "PCAP_CMDS",
    "VF_CMDS",
    "Mirror",
    "Pcap",
    "Vf",
    "format_mirror_status",
    "format_pcap_status",
    "format_vf_status",
]

VF_CMDS = ["status", "component", "port", "classifier_table", "exit"]
MIRROR_CMDS = ["status", "component", "port", "exit"]
PCAP_CMDS = ["status", "start", "stop", "exit"]

VF_COMPONENT_TYPES = ["forward", "merge", "classifier"]
MIRROR_COMPONENT_TYPES = ["mirror"]


def _slave_line(cores: list[str], indent: str, always_list: bool) -> list[str]:
    if not cores:
        return []
    if len(cores) == 1 and not always_list:
        return [f"{indent}- slave: {cores[0]}"]
    return [f"{indent}- slaves: [{', '.join(cores)}]"]


def _basic_info(st: dict[str, Any], always_list: bool) -> list[str]:
    cores = [str(c.get("core")) for c in st.get("components") or []]
    return [
        "Basic Information:",
        f"  - client-id: {st.get('client-id')}",
        f"  - ports: [{', '.join(str(p) for p in st.get('ports') or [])}]",
        "  - lcore_ids:",
        f"    - master: {st.get('master-lcore')}",
        *_slave_line(cores, "    ", always_list),
    ]


def _vlan_suffix(vlan: Any) -> str:
    if not isinstance(vlan, dict):
        return ""
    op = vlan.get("operation")
    if op == "add":
        return f" (vlan operation: add, id: {vlan.get('id')}, pcp: {vlan.get('pcp')})"
    if op == "del":
        return " (vlan operation: del)"
    return ""


def format_vf_status(st: dict[str, Any]) -> list[str]:
    """Render ``GET /v1/vfs/N`` as SPP's ``vf N; status``."""
    lines = _basic_info(st, always_list=True)
    lines.append("Classifier Table:")
    table = st.get("classifier_table") or []
    if not table:
        lines.append("  No entries.")
    for ent in table:
        lines.append(f"  - {ent.get('value')}, {ent.get('port')}")
    lines.append("Components:")
    for comp in st.get("components") or []:
        if "name" not in comp:
            lines.append(f"  - core:{comp.get('core')} '' (type: {comp.get('type', 'unuse')})")
            continue
        lines.append(f"  - core:{comp.get('core')} '{comp['name']}' (type: {comp.get('type')})")
        for d in ("rx", "tx"):
            for p in comp.get(f"{d}_port") or []:
                lines.append(f"    - {d}: {p.get('port')}{_vlan_suffix(p.get('vlan'))}")
    return lines


def format_mirror_status(st: dict[str, Any]) -> list[str]:
    """Render ``GET /v1/mirrors/N`` as SPP's ``mirror N; status``."""
    lines = _basic_info(st, always_list=False)
    lines.append("Components:")
    for comp in st.get("components") or []:
        if "name" not in comp:
            lines.append(f"  - core:{comp.get('core')} '' (type: {comp.get('type', 'unuse')})")
            continue
        lines.append(f"  - core:{comp.get('core')} '{comp['name']}' (type: {comp.get('type')})")
        rx = comp.get("rx_port") or []
        lines.append(f"    - rx: {rx[0].get('port') if rx else ''}")
        lines.append(f"    - tx: [{', '.join(str(p.get('port')) for p in comp.get('tx_port') or [])}]")
    return lines


def format_pcap_status(st: dict[str, Any]) -> list[str]:
    """Render ``GET /v1/pcaps/N`` as SPP's ``pcap N; status``."""
    cores = [str(c.get("core")) for c in st.get("core") or []]
    lines = [
        "Basic Information:",
        f"  - client-id: {st.get('client-id')}",
        f"  - status: {st.get('status')}",
        "  - lcore_ids:",
        f"    - master: {st.get('master-lcore')}",
        *_slave_line(cores, "    ", always_list=False),
        "Components:",
    ]
    for c in st.get("core") or []:
        lines.append(f"  - core:{c.get('core')} {c.get('role')}")
        if c.get("role") == "receive":
            for p in c.get("rx_port") or []:
                lines.append(f"    - rx: {p.get('port')}")
        else:
            lines.append(f"    - filename: {c.get('filename', '')}")
    return lines


class _Worker:
    """What vf and mirror share: status, ``component start|stop``, ``port add|del``, ``exit``."""

    kind = ""
    collection = ""
    cmds: list[str] = []
    component_types: list[str] = []
    with_vlan = False

    def __init__(self, client: SppCtlClient, sec_id: int) -> None:
        self.client = client
        self.sec_id = sec_id
        self.path = f"{self.collection}/{sec_id}"

    def status(self) -> dict[str, Any]:
        st = self.client.get(self.path)
        return st if isinstance(st, dict) else {}

    def format(self, st: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def run(self, sub: str) -> None:
        tokens = sub.split()
        cmd, params = (tokens[0], tokens[1:]) if tokens else ("", [])
        if cmd not in self.cmds:
            raise CliError(f'Invalid command "{cmd}".')
        if cmd in ("status", "exit") and params:
            raise CliError(f"'{cmd}' takes no arguments, got '{' '.join(params)}'.")
        if cmd == "status":
            for line in self.format(self.status()):
                print(line)
        elif cmd == "exit":
            self.exit()
        else:
            self.run_other(cmd, params)

    def run_other(self, cmd: str, params: list[str]) -> None:
        if cmd == "component":
            self._component(params)
        elif cmd == "port":
            self._port(params)

    def exit(self) -> None:
        self.client.delete(self.path)
        print(f"Exit {self.kind} {self.sec_id}.")

    def _component(self, params: list[str]) -> None:
        if params[:1] == ["start"]:
            if len(params) != 4:
                raise CliError("Usage: component start NAME CORE TYPE")
            name, core, ctype = params[1:]
            if not core.isdigit():
                raise CliError(f"Invalid core '{core}' (a number is required).")
            self.client.post(f"{self.path}/components", {"name": name, "core": int(core), "type": ctype})
            print(f"Succeeded to start component '{name}' on core:{core}")
        elif params[:1] == ["stop"]:
            if len(params) != 2:
                raise CliError("Usage: component stop NAME")
            names = [c["name"] for c in self.status().get("components") or [] if "name" in c]
            if params[1] not in names:
                running = ", ".join(names) or "none"
                raise CliError(
                    f"No component '{params[1]}' in {self.kind} {self.sec_id} (components: {running})."
                )
            self.client.delete(f"{self.path}/components/{params[1]}")
            print(f"Succeeded to delete component '{params[1]}'")
        else:
            raise CliError("Usage: component start NAME CORE TYPE | component stop NAME")

    def _port(self, params: list[str]) -> None:
        usage = "Usage: port add|del PORT [nq Q] rx|tx NAME"
        if self.with_vlan:
            usage += " [add_vlantag VID PCP|del_vlantag]"
        if not params or params[0] not in ("add", "del"):
            raise CliError(usage)
        action = params[0]
        wire, _ = join_nq(params[1:])
        if len(wire) < 3:
            raise CliError(usage)
        port, direction, name, rest = wire[0], wire[1], wire[2], wire[3:]
        if direction not in ("rx", "tx"):
            raise CliError(f"Invalid direction '{direction}' (rx or tx). {usage}")
        body: dict[str, Any] = {
            "action": "attach" if action == "add" else "detach",
            "port": port,
            "dir": direction,
        }
        if self.with_vlan:
            vlan: dict[str, Any] = {}
            if rest[:1] == ["add_vlantag"] and len(rest) == 3:
                if not (rest[1].isdigit() and rest[2].isdigit()):
                    raise CliError("add_vlantag needs a numeric VID and PCP.")
                vlan = {"operation": "add", "id": int(rest[1]), "pcp": int(rest[2])}
            elif rest == ["del_vlantag"]:
                vlan = {"operation": "del"}
            elif rest:
                raise CliError(usage)
            body["vlan"] = vlan
        elif rest:
            raise CliError(usage)
        self.client.put(f"{self.path}/components/{name}/ports", body)
        print(f"Succeeded to {action} port")

    # -- completion ----------------------------------------------------------------------------

    def complete(self, text: str, line: str, begidx: int) -> list[str]:
        words = sub_tokens(line, begidx) or []
        if not words:
            return matching(self.cmds, text)
        cmd, args = words[0], words[1:]
        if cmd == "component":
            if not args:
                return matching(["start", "stop"], text)
            st = self._status_quiet()
            comps = st.get("components") or []
            if args[0] == "stop" and len(args) == 1:
                return matching([c["name"] for c in comps if "name" in c], text)
            if args[0] == "start" and len(args) == 2:
                return matching([str(c.get("core")) for c in comps if "name" not in c], text)
            if args[0] == "start" and len(args) == 3:
                return matching(self.component_types, text)
        if cmd == "port":
            return self._complete_port(args, text)
        return self.complete_other(cmd, args, text)

    def complete_other(self, cmd: str, args: list[str], text: str) -> list[str]:
        return []

    def _complete_port(self, args: list[str], text: str) -> list[str]:
        """``port add|del PORT [nq Q] rx|tx NAME [add_vlantag VID PCP | del_vlantag]``."""
        if not args:
            return matching(["add", "del"], text)
        action, rest = args[0], args[1:]
        if not rest:
            if action == "del":
                return matching([*self._attached_ports(), *(t + ":" for t in WORKER_PORT_TYPES)], text)
            return matching([t + ":" for t in WORKER_PORT_TYPES], text)
        queued = rest[1:2] == ["nq"]
        if queued:
            if len(rest) == 2:
                return []  # the queue number: nothing sensible to offer
            rest = [rest[0], *rest[3:]]
        if len(rest) == 1:
            queue = ["nq"] if rest[0].startswith("phy:") and not queued else []
            return matching(["rx", "tx", *queue], text)
        if len(rest) == 2:
            st = self._status_quiet()
            return matching([c["name"] for c in st.get("components") or [] if "name" in c], text)
        if len(rest) == 3 and self.with_vlan and action == "add":
            return matching(["add_vlantag", "del_vlantag"], text)
        return []

    def _attached_ports(self) -> list[str]:
        ports = []
        for comp in self._status_quiet().get("components") or []:
            for d in ("rx_port", "tx_port"):
                ports += [str(p.get("port")) for p in comp.get(d) or [] if " nq " not in str(p.get("port"))]
        return ports

    def _status_quiet(self) -> dict[str, Any]:
        try:
            st = self.client.get(self.path, timeout=2.0)
        except CtlError:
            return {}
        return st if isinstance(st, dict) else {}


class Vf(_Worker):
    """spp_vf: forward/merge/classifier components, vlan tags, the classifier table."""

    kind = "vf"
    collection = "vfs"
    cmds = VF_CMDS
    component_types = VF_COMPONENT_TYPES
    with_vlan = True

    def format(self, st: dict[str, Any]) -> list[str]:
        return format_vf_status(st)

    def run_other(self, cmd: str, params: list[str]) -> None:
        if cmd == "classifier_table":
            self._cls_table(params)
        else:
            super().run_other(cmd, params)

    def _cls_table(self, params: list[str]) -> None:
        usage = (
            "Usage: classifier_table add|del mac MAC|default PORT"
            " | classifier_table add|del vlan VID MAC|default PORT"
        )
        if len(params) < 2 or params[0] not in ("add", "del") or params[1] not in ("mac", "vlan"):
            raise CliError(usage)
        action, ctype = params[0], params[1]
        body: dict[str, Any] = {"action": action, "type": ctype}
        rest = params[2:]
        if ctype == "vlan":
            if not rest:
                raise CliError(usage)
            body["vlan"] = rest.pop(0)
        wire, _ = join_nq(rest[1:])
        if not rest or len(wire) != 1:
            raise CliError(usage)
        body["mac_address"] = rest[0]
        body["port"] = wire[0]
        self.client.put(f"{self.path}/classifier_table", body)
        print(f"Succeeded to {action}")

    def complete_other(self, cmd: str, args: list[str], text: str) -> list[str]:
        if cmd != "classifier_table":
            return []
        if not args:
            return matching(["add", "del"], text)
        if len(args) == 1:
            return matching(["mac", "vlan"], text)
        n = len(args) - (1 if args[1] == "vlan" else 0)
        if n == 2:
            return matching(["default"], text)
        if n == 3:
            return matching([t + ":" for t in WORKER_PORT_TYPES], text)
        return []


class Mirror(_Worker):
    """spp_mirror: mirror components only, no vlan handling."""

    kind = "mirror"
    collection = "mirrors"
    cmds = MIRROR_CMDS
    component_types = MIRROR_COMPONENT_TYPES
    with_vlan = False

    def format(self, st: dict[str, Any]) -> list[str]:
        return format_mirror_status(st)


class Pcap:
    """spp_pcap: ``start``/``stop`` capturing, ``status``, ``exit``."""

    kind = "pcap"

    def __init__(self, client: SppCtlClient, sec_id: int) -> None:
        self.client = client
        self.sec_id = sec_id
        self.path = f"pcaps/{sec_id}"

    def run(self, sub: str) -> None:
        tokens = sub.split()
        cmd, params = (tokens[0], tokens[1:]) if tokens else ("", [])
        if cmd not in PCAP_CMDS:
            raise CliError(f'Invalid command "{cmd}".')
        if params:
            raise CliError(f"'{cmd}' takes no arguments, got '{' '.join(params)}'.")
        if cmd == "status":
            st = self.client.get(self.path)
            for line in format_pcap_status(st if isinstance(st, dict) else {}):
                print(line)
        elif cmd in ("start", "stop"):
            self.client.put(f"{self.path}/capture", {"action": cmd})
            print("Start packet capture." if cmd == "start" else "Stop packet capture.")
        else:
            self.exit()

    def exit(self) -> None:
        self.client.delete(self.path)
        print(f"Exit pcap {self.sec_id}.")

    def complete(self, text: str, line: str, begidx: int) -> list[str]:
        words = sub_tokens(line, begidx) or []
        return matching(PCAP_CMDS, text) if not words else []
