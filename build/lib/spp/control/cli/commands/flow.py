"""``pri; flow ...``: rte_flow rules on the primary's phy ports (validate/create/destroy/list/status).

spp-ctl answers 200 even when the primary refused the rule (``"result": "error"``); that case is
turned into a failure here so scripts see it.
"""

from __future__ import annotations

from typing import Any

from ..client import SppCtlClient
from ..common import CliError
from ..completion import matching

__all__ = ["FLOW_CMDS", "complete", "format_list", "parse_rule", "run"]

FLOW_CMDS = ["validate", "create", "destroy", "list", "status"]
_USAGE = (
    "Usage: flow validate|create phy:N [group G] [priority P] [ingress|egress] [transfer] "
    "pattern ... / end actions ... / end"
)


def _port_id(port: str) -> int:
    typ, _, num = port.partition(":")
    if typ != "phy" or not num.isdigit():
        raise CliError(f"Flow rules apply to phy ports only, got '{port}'.")
    return int(num)


def _split_items(tokens: list[str], what: str) -> tuple[list[str], list[str]]:
    """``eth dst is X / vlan vid is 1 / end REST`` -> (['eth dst is X', 'vlan vid is 1'], REST)."""
    items: list[str] = []
    cur: list[str] = []
    for i, tok in enumerate(tokens):
        if tok == "end":
            if cur:
                items.append(" ".join(cur))
            return items, tokens[i + 1 :]
        if tok == "/":
            if cur:
                items.append(" ".join(cur))
            cur = []
        else:
            cur.append(tok)
    raise CliError(f"'{what}' must be closed with '/ end'.")


def parse_rule(params: list[str]) -> tuple[int, dict[str, Any]]:
    """``phy:0 ingress pattern eth / end actions queue index 1 / end`` -> (0, request body)."""
    if not params:
        raise CliError(_USAGE)
    port = _port_id(params[0])
    rule: dict[str, Any] = {}
    rest = params[1:]
    while rest and rest[0] != "pattern":
        tok = rest.pop(0)
        if tok in ("group", "priority"):
            if not rest or not rest[0].isdigit():
                raise CliError(f"'{tok}' needs a number.")
            rule[tok] = int(rest.pop(0))
        elif tok in ("ingress", "egress"):
            rule["direction"] = tok
        elif tok == "transfer":
            rule["transfer"] = True
        else:
            raise CliError(f"Unknown flow attribute '{tok}'. {_USAGE}")
    if not rest:
        raise CliError(_USAGE)
    rule["pattern"], rest = _split_items(rest[1:], "pattern")
    if not rest or rest[0] != "actions":
        raise CliError(_USAGE)
    rule["actions"], rest = _split_items(rest[1:], "actions")
    if rest:
        raise CliError(f"Unexpected '{' '.join(rest)}' after actions.")
    rule.setdefault("direction", "ingress")
    return port, {"rule": rule}


def _message(reply: Any) -> str:
    if not isinstance(reply, dict):
        return ""
    msg = " ".join(str(reply.get("message", "")).split())
    if reply.get("result") == "error":
        raise CliError(f"Error: {msg or 'flow command failed'}")
    return msg


def _rules(status: dict[str, Any], port: int) -> list[dict[str, Any]]:
    for p in status.get("phy_ports") or []:
        if p.get("id") == port:
            return list(p.get("flow") or [])
    raise CliError(f"No such phy port 'phy:{port}'.")


def format_list(rules: list[dict[str, Any]]) -> list[str]:
    """testpmd-style ``flow list``: ``ID Group Prio Attr Rule`` separated by tabs."""
    lines = ["ID\tGroup\tPrio\tAttr\tRule"]
    for r in rules:
        attr = r.get("attr") or {}
        flags = ("i" if attr.get("ingress") else "-") + ("e" if attr.get("egress") else "-")
        flags += "t" if attr.get("transfer") else "-"
        pats = " ".join(str(p.get("type", "?")).upper() for p in r.get("patterns") or [])
        acts = " ".join(str(a.get("type", "?")).upper() for a in r.get("actions") or [])
        cols = [r.get("rule_id"), attr.get("group", 0), attr.get("priority", 0), flags, f"{pats} => {acts}"]
        lines.append("\t".join(str(c) for c in cols))
    return lines


def _format_rule(rule: dict[str, Any]) -> list[str]:
    attr = rule.get("attr") or {}
    lines = [f"Rule #{rule.get('rule_id')}", "  Attributes:"]
    lines += [f"    {k}: {v}" for k, v in attr.items()]
    lines.append("  Patterns:")
    for p in rule.get("patterns") or []:
        lines.append(f"    - {p.get('type')}")
        for key in ("spec", "last", "mask"):
            if p.get(key):
                lines.append(f"      {key}: {p[key]}")
    lines.append("  Actions:")
    for a in rule.get("actions") or []:
        conf = f" {a['conf']}" if a.get("conf") else ""
        lines.append(f"    - {a.get('type')}{conf}")
    return lines


def run(client: SppCtlClient, status: dict[str, Any], params: list[str]) -> None:
    """Run ``flow SUB ...`` (``status`` is the primary status already fetched by ``pri``)."""
    if not params or params[0] not in FLOW_CMDS:
        raise CliError(f"Invalid flow command. Use one of: {', '.join(FLOW_CMDS)}.")
    sub, args = params[0], params[1:]
    if sub in ("validate", "create"):
        port, body = parse_rule(args)
        path = f"primary/flow_rules/port_id/{port}" + ("/validate" if sub == "validate" else "")
        print(_message(client.post(path, body)))
    elif sub == "destroy":
        if len(args) != 2:
            raise CliError("Usage: flow destroy phy:N RULE_ID|ALL")
        port = _port_id(args[0])
        if args[1] == "ALL":
            path = f"primary/flow_rules/port_id/{port}"
        elif args[1].isdigit():
            path = f"primary/flow_rules/{args[1]}/port_id/{port}"
        else:
            raise CliError(f"Invalid rule ID '{args[1]}' (a number or ALL).")
        print(_message(client.delete(path)))
    elif sub == "list":
        if len(args) != 1:
            raise CliError("Usage: flow list phy:N")
        for line in format_list(_rules(status, _port_id(args[0]))):
            print(line)
    else:
        if len(args) != 2 or not args[1].isdigit():
            raise CliError("Usage: flow status phy:N RULE_ID")
        for r in _rules(status, _port_id(args[0])):
            if str(r.get("rule_id")) == args[1]:
                for line in _format_rule(r):
                    print(line)
                return
        raise CliError(f"Flow rule #{args[1]} not found on phy:{_port_id(args[0])}.")


def complete(args: list[str], text: str) -> list[str]:
    if not args:
        return matching(FLOW_CMDS, text)
    if len(args) == 1:
        return matching(["phy:"], text)
    if args[0] in ("validate", "create"):
        words = ["group", "priority", "ingress", "egress", "transfer", "pattern", "actions", "/", "end"]
        return matching(words, text)
    if args[0] == "destroy" and len(args) == 2:
        return matching(["ALL"], text)
    return []
