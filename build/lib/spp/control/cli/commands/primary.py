"""``pri; SUB``: commands for spp_primary (§7.3 of the spec).

Every sub-command first reads ``GET /v1/primary/status``, as SPP does: it tells whether the
primary is there at all and whether it runs a forwarder (``add``/``del``/``patch``/``forward``/
``stop`` make sense only then, pipes excepted).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..client import LAUNCH_TIMEOUT, CtlError, SppCtlClient
from ..common import PRI_ADD_TYPES, SEC_TYPES, CliError, join_nq
from ..completion import matching, sub_tokens
from ..session import Session
from . import flow

__all__ = [
    "PRI_CMDS",
    "Primary",
    "format_status",
    "free_lcores",
    "launch_template",
    "parse_launch",
    "parse_opts",
]

PRI_CMDS = ["status", "add", "del", "forward", "stop", "patch", "launch", "clear", "flow"]

#: Used for the secondaries' ``--file-prefix`` in the launch template when set (as SPP).
ENV_FILE_PREFIX = "SPP_FILE_PREFIX"

#: Port the secondaries connect to; spp-ctl's REST API does not tell it, 6666 is spp-ctl's default.
SEC_CTL_PORT = 6666


def _lcore_lines(lcores: list[Any], indent: str) -> list[str]:
    """``- master: 0`` and ``- slave: 1`` / ``- slaves: [1, 2]`` (SPP's wording)."""
    lines = [f"{indent}- master: {lcores[0]}"]
    rest = lcores[1:]
    if len(rest) == 1:
        lines.append(f"{indent}- slave: {rest[0]}")
    elif rest:
        lines.append(f"{indent}- slaves: [{', '.join(str(x) for x in rest)}]")
    return lines


def _num(v: Any, width: int) -> str:
    """Right-aligned counter; a missing counter shows as ``-`` instead of failing."""
    return f"{'-' if v is None else v:>{width}}"


def format_status(st: dict[str, Any]) -> list[str]:
    """Render ``GET /v1/primary/status`` exactly as SPP's ``pri; status`` (spec §7.3)."""
    lines: list[str] = []
    lcores = st.get("lcores")
    if isinstance(lcores, list) and lcores:
        lines.append("- lcore_ids:")
        lines += _lcore_lines(lcores, "  ")
    fwd = st.get("forwarder")
    if isinstance(fwd, dict):
        lines.append("- forwarder:")
        lines.append(f"  - status: {fwd.get('status', '-')}")
        lines.append("  - ports:")
        dsts = {p.get("src"): p.get("dst") for p in fwd.get("patches") or []}
        for port in fwd.get("ports") or []:
            lines.append(f"    - {port} -> {dsts[port]}" if port in dsts else f"    - {port}")
    if "pipes" in st:
        lines.append("- pipes:")
        for p in st.get("pipes") or []:
            lines.append(f"  - pipe:{p.get('id')} ring:{p.get('rx')} ring:{p.get('tx')}")
    if "phy_ports" in st or "ring_ports" in st:
        lines.append("- stats")
    if "phy_ports" in st:
        lines.append("  - physical ports:")
        lines.append("      ID          rx          tx     tx_drop  rxq  txq mac_addr")
        for p in st.get("phy_ports") or []:
            nq = p.get("nof_queues") or {}
            lines.append(
                f"      {_num(p.get('id'), 2)}  {_num(p.get('rx'), 10)}  {_num(p.get('tx'), 10)}  "
                f"{_num(p.get('tx_drop'), 10)} {_num(nq.get('rx'), 4)} {_num(nq.get('tx'), 4)} "
                f"{p.get('eth', '')}"
            )
    if "ring_ports" in st:
        lines.append("  - ring ports:")
        lines.append("      ID          rx          tx     rx_drop     tx_drop")
        for p in st.get("ring_ports") or []:
            lines.append(
                f"      {_num(p.get('id'), 2)}  {_num(p.get('rx'), 10)}  {_num(p.get('tx'), 10)}  "
                f"{_num(p.get('rx_drop'), 10)}  {_num(p.get('tx_drop'), 10)}"
            )
    return lines


def parse_opts(tokens: list[str]) -> dict[str, str | None]:
    """``['-l', '1-2', '--no-pci', '-m', '512']`` -> ``{'-l': '1-2', '--no-pci': None, '-m': '512'}``.

    A value ``phy:0`` followed by ``nq Q`` keeps the queue (``-c phy:0 nq 1`` for spp_pcap).
    """
    opts: dict[str, str | None] = {}
    key: str | None = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("-"):
            opts[tok] = None
            key = tok
        elif key is not None:
            if tok.startswith("phy:") and i + 2 < len(tokens) and tokens[i + 1] == "nq":
                tok = f"{tok} nq {tokens[i + 2]}"
                i += 2
            opts[key] = tok
            key = None
        else:
            raise CliError(
                f"Unexpected argument '{tok}' in launch options (a value needs an option before it)."
            )
        i += 1
    return opts


def parse_launch(params: list[str], used_ids: list[int]) -> dict[str, Any]:
    """Turn ``launch TYPE [ID] EAL... -- APP...`` into the body of ``PUT /v1/primary/launch``.

    Follows SPP: TYPE may be ``nfv`` or ``spp_nfv``; the ID may come from ``-n``/``--client-id``;
    ``--proc-type secondary`` is added; the app's ID option is forced to the ID.
    """
    if len(params) < 2:
        raise CliError("Invalid syntax! Proc type, ID and options are required.")
    proc_type = params[0]
    if params[1].startswith("-"):
        sec_id: str | None = None
        args = params[1:]
    else:
        sec_id = params[1]
        args = params[2:]
    if proc_type.startswith("spp_"):
        proc_name, proc_type = proc_type, proc_type[len("spp_") :]
    else:
        proc_name = "spp_" + proc_type
    if proc_type not in SEC_TYPES:
        raise CliError(f"'{proc_type}' is not supported in launch cmd.")
    if "--" not in args:
        raise CliError('Arguments should include separator "--".')
    sep = args.index("--")
    eal_tokens, app_tokens = args[:sep], args[sep + 1 :]
    if "--proc-type" not in eal_tokens:
        eal_tokens += ["--proc-type", "secondary"]
    eal = parse_opts(eal_tokens)
    app = parse_opts(app_tokens)
    id_opt = "-n" if proc_type == "nfv" else "--client-id"
    if sec_id is None:
        sec_id = app.get(id_opt)
        if sec_id is None:
            raise CliError("Secondary ID is required!")
    if not sec_id.isdigit() or int(sec_id) < 1:
        raise CliError(f"Invalid secondary ID '{sec_id}'.")
    app[id_opt] = sec_id
    if int(sec_id) in used_ids:
        raise CliError(f"Secondary ID {sec_id} is already used!")
    return {"client_id": sec_id, "proc_name": proc_name, "eal": eal, "app": app}


def free_lcores(layout: Any, usage: Any) -> list[int]:
    """Lcores of ``/v1/cpu_layout`` not used by any process of ``/v1/cpu_usage``, sorted."""
    lcores: set[int] = set()
    for sock in layout if isinstance(layout, list) else []:
        for core in sock.get("cores", []):
            lcores.update(x for x in core.get("lcores", []) if isinstance(x, int))
    for ent in usage if isinstance(usage, list) else []:
        lcores.discard(ent.get("master-lcore"))
        lcores.difference_update(ent.get("lcores") or [])
    return sorted(lcores)


def launch_template(ptype: str, sid: str, config: Any, server_host: str, free: list[int]) -> str | None:
    """The completion SPP offers after ``pri; launch TYPE ID``, or ``None`` if lcores run short.

    ``-l {sec_m_lcore},{free lcores} {sec_mem} [--file-prefix P] -- {-n|--client-id} ID
    -s HOST:6666 [--vhost-client] [-c {sec_pcap_port}]``.
    """
    m_lcore = int(config["sec_m_lcore"])
    nof = int(config[f"sec_{ptype}_nof_lcores"])
    slaves = [str(x) for x in free if x > m_lcore][:nof]
    if len(slaves) < nof:
        return None
    words = [f"-l {m_lcore},{','.join(slaves)}", str(config["sec_mem"])]
    prefix = os.getenv(ENV_FILE_PREFIX)
    if prefix:
        words.append(f"--file-prefix {prefix}")
    words.append("--")
    words.append(f"{'-n' if ptype == 'nfv' else '--client-id'} {sid}")
    words.append(f"-s {server_host}:{SEC_CTL_PORT}")
    if config["sec_vhost_cli"]:
        words.append("--vhost-client")
    if ptype == "pcap":
        words.append(f"-c {config['sec_pcap_port']}")
    return " ".join(words)


class Primary:
    """Runs and completes ``pri; ...`` against the current spp-ctl."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def client(self) -> SppCtlClient:
        # Looked up on each use: `server N` may switch the current spp-ctl.
        return self.session.client

    # -- running -------------------------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        try:
            st = self.client.get("primary/status")
        except CtlError as e:
            if e.status == 404:
                raise CliError("No spp_primary is running.") from e
            if e.status is None:
                raise
            raise CliError(f"Error: spp_primary is not running normally ({e.message}).") from e
        return st if isinstance(st, dict) else {}

    def run(self, sub: str) -> None:
        tokens = sub.split()
        if not tokens:
            raise CliError(f"Invalid pri command: ''. Use one of: {', '.join(PRI_CMDS)}.")
        cmd, params = tokens[0], tokens[1:]
        if cmd not in PRI_CMDS:
            raise CliError(f"Invalid pri command: '{cmd}'")
        status = self._status()
        if cmd == "status":
            self._no_args(cmd, params)
            for line in format_status(status):
                print(line)
        elif cmd == "add":
            self._add(status, params)
        elif cmd == "del":
            self._del(status, params)
        elif cmd in ("forward", "stop"):
            self._no_args(cmd, params)
            self._need_forwarder(status)
            self.client.put("primary/forward", {"action": "start" if cmd == "forward" else "stop"})
            print("Start forwarding." if cmd == "forward" else "Stop forwarding.")
        elif cmd == "patch":
            self._need_forwarder(status)
            self._patch(params)
        elif cmd == "clear":
            self._no_args(cmd, params)
            self.client.delete("primary/status")
            print("Clear port statistics.")
        elif cmd == "launch":
            self._launch(params)
        elif cmd == "flow":
            flow.run(self.client, status, params)

    @staticmethod
    def _no_args(cmd: str, params: list[str]) -> None:
        if params:
            raise CliError(f"'{cmd}' takes no arguments, got '{' '.join(params)}'.")

    @staticmethod
    def _need_forwarder(status: dict[str, Any]) -> None:
        if "forwarder" not in status:
            raise CliError("No forwarder is running.")

    def _add(self, status: dict[str, Any], params: list[str]) -> None:
        if not params:
            raise CliError("Port is required!")
        port = params[0]
        body: dict[str, Any] = {"action": "add", "port": port}
        if port.startswith("pipe:"):
            if len(params) != 3:
                raise CliError("Usage: add pipe:N ring:A ring:B")
            body["rx"], body["tx"] = params[1], params[2]
        else:
            if len(params) != 1:
                raise CliError(f"Usage: add PORT (one port), got '{' '.join(params)}'.")
            self._need_forwarder(status)
            if port in (status["forwarder"].get("ports") or []):
                raise CliError(f"'{port}' is already added.")
        self.client.put("primary/ports", body)
        print(f"Add {port}.")

    def _del(self, status: dict[str, Any], params: list[str]) -> None:
        if not params:
            raise CliError("Port is required!")
        if len(params) != 1:
            raise CliError(f"Usage: del PORT (one port), got '{' '.join(params)}'.")
        port = params[0]
        if port.startswith("phy:"):
            raise CliError(f"Cannot delete phy port '{port}'.")
        if not port.startswith("pipe:"):
            self._need_forwarder(status)
            patched = {p.get(k) for p in status["forwarder"].get("patches") or [] for k in ("src", "dst")}
            if port in patched:
                raise CliError(f"Cannot delete patched port '{port}'.")
        self.client.put("primary/ports", {"action": "del", "port": port})
        print(f"Delete {port}.")

    def _patch(self, params: list[str]) -> None:
        patch(self.client, "primary/patches", params)

    def _launch(self, params: list[str]) -> None:
        used = [p["client-id"] for p in self.client.processes() if isinstance(p.get("client-id"), int)]
        body = parse_launch(params, used)
        self.client.put("primary/launch", body, timeout=LAUNCH_TIMEOUT)
        wait = float(self.session.config["sec_wait_launch"])
        if wait > 0:
            time.sleep(wait)
        print(f"Send request to launch {body['proc_name'][len('spp_') :]}:{body['client_id']}.")

    def exit(self) -> None:
        """``bye all``: ``DELETE /v1/primary``."""
        self.client.delete("primary")
        print("Exit primary")

    # -- completion ----------------------------------------------------------------------------

    def complete(self, text: str, line: str, begidx: int) -> list[str]:
        words = sub_tokens(line, begidx)
        if words is None:
            return [";"] if not text and line.strip() == "pri" else []
        if not words:
            return matching(PRI_CMDS, text)
        cmd, args = words[0], words[1:]
        if cmd == "launch":
            return self._compl_launch(args, text)
        if cmd == "add" and not args:
            return matching([t + ":" for t in PRI_ADD_TYPES], text)
        if cmd in ("del", "patch"):
            fwd = self._forwarder()
            ports = list(fwd.get("ports") or [])
            patches = fwd.get("patches") or []
            if cmd == "del" and not args:
                patched = {p.get(k) for p in patches for k in ("src", "dst")}
                return matching([p for p in ports if p not in patched and not p.startswith("phy:")], text)
            if cmd == "patch" and len(args) < 2:
                if not args:
                    return matching([*ports, "reset"] if patches else ports, text)
                if args[0] != "reset":
                    return matching(ports, text)
        if cmd == "flow":
            return flow.complete(args, text)
        return []

    def _forwarder(self) -> dict[str, Any]:
        try:
            st = self.client.get("primary/status", timeout=2.0)
        except CtlError:
            return {}
        fwd = st.get("forwarder") if isinstance(st, dict) else None
        return fwd if isinstance(fwd, dict) else {}

    def _compl_launch(self, args: list[str], text: str) -> list[str]:
        if not args:
            return matching(SEC_TYPES, text)
        ptype = args[0][len("spp_") :] if args[0].startswith("spp_") else args[0]
        if ptype not in SEC_TYPES:
            return []
        try:
            used = {p.get("client-id") for p in self.client.processes(timeout=2.0)}
        except CtlError:
            return []
        if len(args) == 1:
            max_sec = int(self.session.config["max_secondary"])
            return matching([str(i) for i in range(1, max_sec + 1) if i not in used], text)
        if len(args) == 2 and not text and args[1].isdigit() and int(args[1]) not in used:
            try:
                layout = self.client.get("cpu_layout", timeout=2.0)
                usage = self.client.get("cpu_usage", timeout=2.0)
            except CtlError:
                return []
            tmpl = launch_template(
                ptype, args[1], self.session.config, self.client.host, free_lcores(layout, usage)
            )
            return [tmpl] if tmpl else []
        return []


def patch(client: SppCtlClient, path: str, params: list[str]) -> None:
    """``patch SRC [nq Q] DST [nq Q]`` / ``patch reset`` for both the primary and spp_nfv."""
    if not params:
        raise CliError("Params are required!")
    if params[0] == "reset":
        if len(params) != 1:
            raise CliError("Usage: patch reset")
        client.delete(path)
        print("Clear all of patches.")
        return
    wire, shown = join_nq(params)
    if len(wire) < 2:
        raise CliError("Dst port is required!")
    if len(wire) > 2:
        raise CliError(f"Usage: patch SRC DST (e.g. 'patch phy:0 ring:0'), got '{' '.join(params)}'.")
    client.put(path, {"src": wire[0], "dst": wire[1]})
    print(f"Patch ports ({shown[0]} -> {shown[1]}).")
