"""``server``: list, switch, register and unregister spp-ctl servers (§7.2)."""

from __future__ import annotations

from ..client import CtlError, SppCtlClient, parse_server_addr
from ..common import CliError
from ..completion import matching
from ..session import Session

__all__ = ["SERVER_CMDS", "complete", "run"]

SERVER_CMDS = ["list", "add", "del"]


def _list(session: Session) -> None:
    for i, s in enumerate(session.servers, 1):
        mark = " *" if i - 1 == session.current else ""
        print(f"  {i}: {s.addr}{mark}")


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
    """Run ``server [list|N|add ADDR[:PORT]|del N|ADDR]``."""
    tokens = arg.split()
    if not tokens or tokens == ["list"]:
        _list(session)
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
            client.processes(timeout=2.0)
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
        raise CliError("Usage: server [list | N | add ADDR[:PORT] | del N|ADDR[:PORT]]")


def complete(session: Session, text: str, words: list[str]) -> list[str]:
    """``words`` are the tokens after ``server`` that precede the one being completed."""
    if not words:
        return matching([*SERVER_CMDS, *(str(i) for i in range(1, len(session.servers) + 1))], text)
    if words == ["del"]:
        return matching(
            [str(i) for i in range(1, len(session.servers) + 1) if i - 1 != session.current], text
        )
    return []
