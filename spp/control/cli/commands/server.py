"""``server``: list, switch, register and unregister spp-ctl servers (§7.2), and look at all of
them at once (``server status``, ``status all``) when the CLI drives several hosts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..client import CtlError, SppCtlClient, parse_server_addr
from ..common import SEC_TYPES, CliError
from ..completion import matching
from ..session import Session

__all__ = ["PROBE_TIMEOUT", "SERVER_CMDS", "ServerState", "complete", "probe_all", "run", "status_lines"]

SERVER_CMDS = ["list", "status", "add", "del"]

#: How long one server may take to answer ``GET /v1/processes`` when all are asked at once: a host
#: that is down or cut off must not hold the others' lines back for the full request time-out.
PROBE_TIMEOUT = 2.0


@dataclass
class ServerState:
    """What one spp-ctl said about its processes, or why it could not be asked."""

    addr: str
    processes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def primary_running(self) -> bool:
        return any(p.get("type") == "primary" for p in self.processes)

    def secondaries(self) -> list[str]:
        """``TYPE:ID`` of every secondary, in SPP's order (nfv, vf, mirror, pcap)."""
        return [
            f"{kind}:{p.get('client-id')}"
            for kind in SEC_TYPES
            for p in self.processes
            if p.get("type") == kind
        ]


def _probe(client: SppCtlClient, timeout: float) -> ServerState:
    try:
        return ServerState(client.addr, client.processes(timeout=timeout))
    except CtlError as e:
        return ServerState(client.addr, error=e.message)


def probe_all(session: Session, timeout: float = PROBE_TIMEOUT) -> list[ServerState]:
    """Ask every registered spp-ctl at the same time; the states come back in the list's order."""
    with ThreadPoolExecutor(max_workers=min(16, len(session.servers))) as pool:
        return list(pool.map(lambda c: _probe(c, timeout), session.servers))


def status_lines(state: ServerState) -> list[str]:
    """SPP's ``status`` block for one server; an unreachable one says why instead of processes."""
    lines = ["- spp-ctl:", f"  - address: {state.addr}"]
    if state.error is not None:
        return [*lines, f"  - error: {state.error}"]
    lines += ["- primary:", f"  - status: {'running' if state.primary_running else 'not running'}"]
    lines += ["- secondary:", "  - processes:"]
    lines += [f"    {i}: {name}" for i, name in enumerate(state.secondaries(), 1)]
    return lines


def _summary(state: ServerState) -> str:
    if state.error is not None:
        return f"unreachable: {state.error}"
    primary = "running" if state.primary_running else "not running"
    secondaries = " ".join(state.secondaries()) or "none"
    return f"primary {primary}, secondary {secondaries}"


def _mark(session: Session, idx: int) -> str:
    return " *" if idx == session.current else ""


def _list(session: Session) -> None:
    for i, s in enumerate(session.servers):
        print(f"  {i + 1}: {s.addr}{_mark(session, i)}")


def _status(session: Session) -> None:
    states = probe_all(session)
    width = max(len(s.addr) + len(_mark(session, i)) for i, s in enumerate(states))
    for i, state in enumerate(states):
        head = f"{state.addr}{_mark(session, i)}"
        print(f"  {i + 1}: {head:<{width}}  {_summary(state)}")
    _raise_if_unreachable(states)


def _raise_if_unreachable(states: list[ServerState]) -> None:
    """One failure line naming every server that did not answer (batch mode then exits 1)."""
    down = [s.addr for s in states if s.error is not None]
    if down:
        raise CliError(f"Error: {len(down)} of {len(states)} spp-ctl did not answer: {', '.join(down)}")


def status_all(session: Session) -> None:
    """``status all``: SPP's status block for every registered server, one after the other."""
    states = probe_all(session)
    for i, state in enumerate(states):
        if i:
            print()
        for line in status_lines(state):
            print(line)
    _raise_if_unreachable(states)


def _find(session: Session, key: str) -> int:
    """Index of a server given as ``N`` (1-origin) or ``ADDR[:PORT]``."""
    if key.isdigit():
        idx = int(key) - 1
        if 0 <= idx < len(session.servers):
            return idx
        raise CliError(f'Invalid server index "{key}" (1-{len(session.servers)}).')
    try:
        host, port = parse_server_addr(key)
    except ValueError as e:
        raise CliError(f"Invalid address: {e}.") from e
    for i, s in enumerate(session.servers):
        if (s.host, s.port) == (host, port):
            return i
    raise CliError(f'"{host}:{port}" is not registered.')


def run(session: Session, arg: str) -> None:
    """Run ``server [list|status|N|ADDR|add ADDR[:PORT]|del N|ADDR]``."""
    tokens = arg.split()
    if not tokens or tokens == ["list"]:
        _list(session)
        return
    if tokens == ["status"]:
        _status(session)
        return
    cmd, params = tokens[0], tokens[1:]
    if cmd == "add":
        if len(params) != 1:
            raise CliError("Usage: server add ADDR[:PORT]")
        try:
            host, port = parse_server_addr(params[0])
        except ValueError as e:
            raise CliError(f"Invalid address: {e}.") from e
        if any((s.host, s.port) == (host, port) for s in session.servers):
            raise CliError(f'"{host}:{port}" is already registered.')
        client = SppCtlClient(host, port, timeout=session.client.timeout)
        try:
            client.processes(timeout=PROBE_TIMEOUT)
        except CtlError as e:
            client.close()
            raise CliError(f'Is not spp-ctl on "{host}:{port}", nor correct address?') from e
        session.servers.append(client)
        print(f'Registered spp-ctl "{host}:{port}".')
    elif cmd == "del":
        if len(params) != 1:
            raise CliError("Usage: server del N|ADDR[:PORT]")
        idx = _find(session, params[0])
        if idx == session.current:
            raise CliError(f'Cannot del server "{idx + 1}" in use!')
        removed = session.servers.pop(idx)
        removed.close()
        if idx < session.current:
            session.current -= 1
        print(f'Unregistered spp-ctl "{removed.addr}".')
    elif len(tokens) == 1:
        idx = _find(session, cmd)
        session.current = idx
        print(f'Switch spp-ctl to "{idx + 1}: {session.client.addr}".')
    else:
        raise CliError(
            "Usage: server [list | status | N | ADDR[:PORT] | add ADDR[:PORT] | del N|ADDR[:PORT]]"
        )


def complete(session: Session, text: str, words: list[str]) -> list[str]:
    """``words`` are the tokens after ``server`` that precede the one being completed."""
    if not words:
        return matching([*SERVER_CMDS, *(str(i) for i in range(1, len(session.servers) + 1))], text)
    if words == ["del"]:
        return matching(
            [str(i) for i in range(1, len(session.servers) + 1) if i - 1 != session.current], text
        )
    return []
