"""Small pieces shared by every command module: the error type and the line clean-up.

They live apart from the shell so that command modules can be tested without a ``cmd.Cmd``.
"""

from __future__ import annotations

import re

from spp.engine.portid import PORT_TYPES

__all__ = [
    "NFV_ADD_TYPES",
    "PORT_TYPES",
    "PRI_ADD_TYPES",
    "SEC_TYPES",
    "WORKER_PORT_TYPES",
    "CliError",
    "clean_cmd",
    "is_comment_line",
    "join_nq",
    "split_sec_cmd",
]

#: Secondary process types, in the order SPP lists them everywhere (status, bye, topo).
SEC_TYPES: tuple[str, ...] = ("nfv", "vf", "mirror", "pcap")

#: Ports ``nfv N; add`` can open (phy ports are there from the start; memif has no driver here).
NFV_ADD_TYPES: tuple[str, ...] = ("ring", "vhost", "pcap", "nullpmd", "tap")
#: ``pri; add`` takes the same, plus ``pipe:N ring:A ring:B``.
PRI_ADD_TYPES: tuple[str, ...] = (*NFV_ADD_TYPES, "pipe")
#: Ports the components of spp_vf and spp_mirror attach (``phy:0 nq 1`` for a queue).
WORKER_PORT_TYPES: tuple[str, ...] = ("phy", "ring", "vhost")


class CliError(Exception):
    """A command was refused or failed; ``str(e)`` is the one line to show the user.

    Commands raise it instead of printing so that the shell can count failures (batch mode exits
    non-zero on any) and so that every failure is reported the same way, on stderr.
    """


def clean_cmd(text: str) -> str:
    """Collapse runs of whitespace and drop spaces around ``;`` as SPP does.

    ``"nfv  1 ;  status"`` becomes ``"nfv 1;status"``, so the ID/sub-command split is trivial.
    """
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s?;\s?", ";", text)


def is_comment_line(line: str) -> bool:
    """SPP echoes lines starting with ``#`` or ``//`` instead of running them (recipe comments)."""
    stripped = line.strip()
    return stripped.startswith("#") or stripped.startswith("//")


def split_sec_cmd(proc: str, arg: str) -> tuple[int, str]:
    """Split the argument of ``nfv 1; status`` into ``(1, "status")``.

    Raises :class:`CliError` with SPP's messages for a missing ``;`` or a non-numeric ID.
    """
    line = clean_cmd(arg)
    if ";" not in line:
        raise CliError("Required an ID and ';' before the command.")
    sid, sub = line.split(";", 1)
    if not sid.isdigit():
        raise CliError(f"Invalid command: {proc} {line}")
    return int(sid), sub.strip()


def join_nq(tokens: list[str]) -> tuple[list[str], list[str]]:
    """Fold ``phy:0 nq 1`` token triples into one port.

    Returns two parallel lists: the wire form (``phy:0nq1``, what spp-ctl and the processes
    expect) and the display form (``phy:0 nq 1``, what SPP prints and shows in status).
    """
    wire: list[str] = []
    shown: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if i + 2 < len(tokens) and tokens[i + 1] == "nq":
            q = tokens[i + 2]
            if not q.isdigit():
                raise CliError(f"Invalid queue number '{q}' for '{tok}'.")
            if not tok.startswith("phy:"):
                raise CliError(f"Only phy ports have queues: '{tok} nq {q}' is not a port.")
            wire.append(f"{tok}nq{q}")
            shown.append(f"{tok} nq {q}")
            i += 3
            continue
        if tok == "nq":
            raise CliError("'nq' must follow a port and precede a queue number, e.g. 'phy:0 nq 1'.")
        wire.append(tok)
        shown.append(tok)
        i += 1
    return wire, shown
