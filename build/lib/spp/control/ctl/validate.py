"""Checks on REST request bodies: required keys, enumerations, port UIDs, MACs, VLANs, flow rules.

Every check raises :class:`~spp.control.ctl.errors.KeyRequired` (``key(<name>) required.``) or
:class:`~spp.control.ctl.errors.KeyInvalid` (``invalid key(<name>): <value>.``), both 400. SPP's
spp-ctl meant the same but its ``KeyInvalid`` crashed into a 500.

The checks are stricter than SPP's where SPP relied on Python's ``int()`` (which accepts
``" 1"``, ``"+1"``, ``"1_0"``): anything that reaches a process is a token in a space-separated
command line, so stray whitespace or signs would change the command the process parses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from .errors import ApiError, KeyInvalid, KeyRequired, shown

PORT_TYPES = ("phy", "vhost", "ring", "pcap", "nullpmd", "tap", "memif", "pipe", "virtio_user")
"""Port types spp-ctl accepts anywhere a port UID is expected (spp-api.md §2)."""

_PORT_RE = re.compile(r"(?P<type>[a-z][a-z_]*):(?P<num>[0-9]+)")
_PHY_QUEUE_RE = re.compile(r"phy:[0-9]+nq[0-9]+")
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_TOKEN_RE = re.compile(r"[!-~]+")  # printable ASCII, no space: one command-line token

VLAN_ID_MAX = 4095
VLAN_PCP_MAX = 7


def _no_constant(name: str) -> Any:
    """Python's json accepts ``NaN``/``Infinity``; JSON does not, and no field takes them."""
    raise ValueError(f"{name} is not JSON")


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode a POST/PUT body as a JSON object, whatever the Content-Type says.

    SPP accepted bodies sent without ``Content-Type: application/json`` (``requests.put(url,
    data=json.dumps(...))`` sends none) — so do we. Not JSON -> ``400 Not in json format.``
    """
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "Not in json format.") from exc
    except RecursionError as exc:
        raise ApiError(400, "Not in json format: nested too deeply.") from exc
    if not isinstance(body, dict):
        raise ApiError(400, f"Not in json format: expected a JSON object, got {type(body).__name__}.")
    return body


ID_MAX = 2**31 - 1
"""Largest process, port or rule id accepted in a URL (a C ``int``, as SPP's processes parse them)."""


def url_id(value: str, name: str) -> int:
    """An id from the URL path (the route already matched ``[0-9]+``), at most :data:`ID_MAX`.

    ``int()`` of thousands of digits raises (Python's int-string conversion limit), which used to
    end in a 500; an id no process can have is a bad request.
    """
    if not (value.isascii() and value.isdigit()) or len(value) > len(str(ID_MAX)) or int(value) > ID_MAX:
        raise ApiError(400, f"invalid {name}: {shown(value)} (expected an integer from 0 to {ID_MAX}).")
    return int(value)


def require(body: dict[str, Any], keys: Iterable[str]) -> None:
    """Every key must be present (checked in the given order, like SPP)."""
    for key in keys:
        if key not in body:
            raise KeyRequired(key)


def one_of(body: dict[str, Any], key: str, allowed: Iterable[str]) -> str:
    """``body[key]`` must be one of ``allowed``; returns it."""
    value = body[key]
    if not isinstance(value, str) or value not in tuple(allowed):
        raise KeyInvalid(key, value)
    return value


def is_port(value: Any, types: Iterable[str] = PORT_TYPES) -> bool:
    """SPP's ``_validate_port`` made strict: ``TYPE:N`` with N plain digits; ``phy:NnqQ`` for queues."""
    if not isinstance(value, str):
        return False
    if _PHY_QUEUE_RE.fullmatch(value):
        return "phy" in tuple(types)
    m = _PORT_RE.fullmatch(value)
    return m is not None and m["type"] in tuple(types)


def port(body: dict[str, Any], key: str, types: Iterable[str] = PORT_TYPES) -> str:
    """``body[key]`` must be a port UID of one of ``types``; returns it."""
    value = body[key]
    if not is_port(value, types):
        raise KeyInvalid(key, value)
    return value


def mac_address(value: Any, key: str = "mac_address") -> str:
    """A MAC as ``xx:xx:xx:xx:xx:xx`` (any case), or ``default`` for the classifier catch-all."""
    if value == "default" or (isinstance(value, str) and _MAC_RE.fullmatch(value)):
        return value
    raise KeyInvalid(key, value)


def uint(value: Any, key: str, maximum: int | None = None) -> int:
    """A non-negative integer given as JSON number or as a string of digits; bools refused."""
    if isinstance(value, bool):
        raise KeyInvalid(key, value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    elif isinstance(value, int):
        number = value
    else:
        raise KeyInvalid(key, value)
    if number < 0 or (maximum is not None and number > maximum):
        raise KeyInvalid(key, value)
    return number


def strict_int(value: Any, key: str) -> int:
    """A JSON integer (not a string, not a bool), >= 0 — for ``core``, flow ``group``/``priority``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= ID_MAX:
        raise KeyInvalid(key, value)
    return value


def token(value: Any, key: str) -> str:
    """A string usable as one command-line token: non-empty printable ASCII without spaces."""
    if not isinstance(value, str) or not _TOKEN_RE.fullmatch(value):
        raise KeyInvalid(key, value)
    return value


def action(body: dict[str, Any], allowed: Iterable[str]) -> str:
    """``action`` must be present and one of ``allowed``."""
    require(body, ["action"])
    return one_of(body, "action", allowed)


def vlan_option(body: dict[str, Any]) -> str:
    """The vf port option from ``vlan``: ``""``, ``" add_vlantag VID PCP"`` or ``" del_vlantag"``.

    Absent, null or ``{}`` means no VLAN operation (the SPP CLI always sends ``"vlan": {}``).
    """
    vlan = body.get("vlan")
    if not vlan:
        return ""
    if not isinstance(vlan, dict):
        raise KeyInvalid("vlan", vlan)
    if "operation" not in vlan:
        raise KeyRequired("vlan.operation")
    operation = vlan["operation"]
    if operation == "none":
        return ""
    if operation == "del":
        return " del_vlantag"
    if operation != "add":
        raise KeyInvalid("vlan.operation", operation)
    for key in ("id", "pcp"):
        if key not in vlan:
            raise KeyRequired(f"vlan.{key}")
    vid = uint(vlan["id"], "vlan.id", VLAN_ID_MAX)
    pcp = uint(vlan["pcp"], "vlan.pcp", VLAN_PCP_MAX)
    return f" add_vlantag {vid} {pcp}"


def flow_rule(body: dict[str, Any]) -> dict[str, Any]:
    """Check a flow rule body (§3.4) and return the ``rule`` object.

    Same rules as SPP (exact types: ``true`` is not an int), plus: group/priority must be >= 0
    and pattern/actions items must be non-blank printable ASCII strings (they are joined with
    ``" / "`` into one command line, so a newline or an empty item would corrupt it).
    """
    require(body, ["rule"])
    rule = body["rule"]
    if not isinstance(rule, dict):
        raise KeyInvalid("rule", rule)
    for key in ("group", "priority"):
        if key in rule:
            strict_int(rule[key], key)
    require(rule, ["direction"])
    if rule["direction"] not in ("ingress", "egress"):
        raise KeyInvalid("direction", rule["direction"])
    if "transfer" in rule and not isinstance(rule["transfer"], bool):
        raise KeyInvalid("transfer", rule["transfer"])
    for key in ("pattern", "actions"):
        require(rule, [key])
        items = rule[key]
        if not isinstance(items, list) or not all(
            isinstance(i, str) and i.strip() and i.isascii() and i.isprintable() for i in items
        ):
            raise KeyInvalid(key, items)
    return rule
