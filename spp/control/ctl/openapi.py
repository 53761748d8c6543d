"""The OpenAPI 3 description of the REST API v1 as spp-ctl serves it (``GET /v1/openapi.json``).

Built from the same tables the handlers use (port types, launch programs and options, id limits),
so it cannot drift from what is accepted; the tests check that every route of
:func:`spp.control.ctl.webapi.routes` is described and fuzz the API from this document.
Errors are ``text/plain`` messages (SPP's format); the status codes are those of
:mod:`spp.control.ctl.errors` and :mod:`spp.control.ctl.httpguard`.
"""

from __future__ import annotations

import re
from typing import Any

from . import launch, validate

JSON = "application/json"
TEXT = "text/plain"

PORT_PATTERN = (
    "^((" + "|".join(validate.PORT_TYPES) + "):[0-9]+|phy:[0-9]+nq[0-9]+)$"
)  # validate.is_port, as a regular expression

MAC_PATTERN = "^(default|[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5})$"

ERRORS = {
    "400": "Bad request: a missing or invalid key (the message names it), a body that is not a JSON "
    "object, an id out of range, or a failure reported by the process.",
    "403": "Forbidden: the Host is not served (DNS rebinding) or a cross-origin state change (CSRF).",
    "404": "Unknown resource: no such path, no primary, or no secondary of this type with this id.",
    "405": "Method not allowed on this path.",
    "413": "Request body too large.",
    "502": "The process answered with something spp-ctl cannot pass on.",
    "503": "The process is not responding (stopped, gone or too slow); a dead one has been removed.",
}


SUMMARIES: dict[tuple[str, str], str] = {
    ("GET", "/v1/processes"): "The registered processes",
    ("GET", "/v1/cpu_layout"): "CPU sockets, cores and lcores of this host",
    ("GET", "/v1/cpu_usage"): "Which lcores each process uses",
    ("GET", "/v1/openapi.json"): "This API as an OpenAPI 3 document",
    ("GET", "/v1/primary/status"): "The primary's lcores, forwarder, pipes and per-port counters",
    ("DELETE", "/v1/primary/status"): "Clear the primary's port counters",
    ("PUT", "/v1/primary/forward"): "Start or stop the primary's forwarder",
    ("PUT", "/v1/primary/ports"): "Add or delete a port of the primary's forwarder, or a pipe",
    ("PUT", "/v1/primary/patches"): "Patch a port to another in the primary's forwarder",
    ("DELETE", "/v1/primary/patches"): "Remove every patch of the primary's forwarder",
    ("PUT", "/v1/primary/launch"): "Start a secondary process (spp_nfv, spp_vf, spp_mirror, spp_pcap)",
    ("DELETE", "/v1/primary"): "Stop the primary",
    ("DELETE", "/v1/primary/"): "Stop the primary (the same, with SPP's trailing slash)",
    (
        "POST",
        "/v1/primary/flow_rules/port_id/{port_id}/validate",
    ): "Check a flow rule for a phy port without creating it",
    ("POST", "/v1/primary/flow_rules/port_id/{port_id}"): "Create a flow rule for a phy port",
    ("DELETE", "/v1/primary/flow_rules/port_id/{port_id}"): "Destroy every flow rule of a phy port",
    ("DELETE", "/v1/primary/flow_rules/{rule_id}/port_id/{port_id}"): "Destroy one flow rule",
    ("GET", "/v1/nfvs/{sec_id}"): "Status of nfv N: lcores, ports, patches and per-port counters",
    ("DELETE", "/v1/nfvs/{sec_id}"): "Stop nfv N",
    ("PUT", "/v1/nfvs/{sec_id}/forward"): "Start or stop forwarding in nfv N",
    ("PUT", "/v1/nfvs/{sec_id}/ports"): "Add or delete a port of nfv N",
    ("PUT", "/v1/nfvs/{sec_id}/patches"): "Patch a port to another in nfv N",
    ("DELETE", "/v1/nfvs/{sec_id}/patches"): "Remove every patch of nfv N",
    (
        "GET",
        "/v1/vfs/{sec_id}",
    ): "Status of vf N: ports, components with their ports and counters, classifier table, "
    "each port's counters (stats)",
    ("DELETE", "/v1/vfs/{sec_id}"): "Stop vf N",
    (
        "POST",
        "/v1/vfs/{sec_id}/components",
    ): "Start a component (forward, merge, classifier) on a worker lcore of vf N",
    ("DELETE", "/v1/vfs/{sec_id}/components/{name}"): "Stop a component of vf N",
    ("PUT", "/v1/vfs/{sec_id}/components/{name}/ports"): "Attach a port to a component of vf N, or detach it",
    ("PUT", "/v1/vfs/{sec_id}/classifier_table"): "Add or delete a classifier entry of vf N",
    ("GET", "/v1/mirrors/{sec_id}"): "Status of mirror N: ports, components, each port's counters (stats)",
    ("DELETE", "/v1/mirrors/{sec_id}"): "Stop mirror N",
    ("POST", "/v1/mirrors/{sec_id}/components"): "Start a mirror component on a worker lcore of mirror N",
    ("DELETE", "/v1/mirrors/{sec_id}/components/{name}"): "Stop a component of mirror N",
    (
        "PUT",
        "/v1/mirrors/{sec_id}/components/{name}/ports",
    ): "Attach a port to a component of mirror N (1 rx, 2 tx), or detach it",
    ("GET", "/v1/pcaps/{sec_id}"): "Status of pcap N: state, receiver and writers with counters",
    ("DELETE", "/v1/pcaps/{sec_id}"): "Stop pcap N",
    ("PUT", "/v1/pcaps/{sec_id}/capture"): "Start or stop capturing in pcap N",
}
"""What each operation does, as the user guide says it (the guide is generated from this)."""


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {TEXT: {"schema": {"type": "string"}}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _schemas() -> dict[str, Any]:
    token = {"type": "string", "pattern": r"^[!-~]+$", "description": "one token: printable ASCII, no space"}
    small_int = {"type": "integer", "minimum": 0, "maximum": validate.ID_MAX}
    digits_or_int = {"oneOf": [small_int, {"type": "string", "pattern": "^[0-9]+$"}]}
    option_value = {
        "description": 'an option\'s value; null, true or "" give the flag alone, false omits it',
        "oneOf": [
            {"type": "string", "pattern": r"^[!-~]*$"},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
        ],
    }
    vlan_op = {
        "type": "object",
        "description": "VLAN operation on a vf port: none, del (strip the tag) or add (push id/pcp)",
        "required": ["operation"],
        "properties": {
            "operation": {"type": "string", "enum": ["none", "add", "del"]},
            "id": {
                "oneOf": [
                    {"type": "integer", "minimum": 0, "maximum": validate.VLAN_ID_MAX},
                    {"type": "string", "pattern": "^[0-9]+$"},
                ]
            },
            "pcp": {
                "oneOf": [
                    {"type": "integer", "minimum": 0, "maximum": validate.VLAN_PCP_MAX},
                    {"type": "string", "pattern": "^[0-9]+$"},
                ]
            },
        },
    }
    item = {"type": "string", "pattern": "^[ -~]*[!-~][ -~]*$"}
    return {
        "PortUid": {"type": "string", "pattern": PORT_PATTERN, "example": "ring:0"},
        "ForwardAction": {
            "type": "object",
            "required": ["action"],
            "properties": {"action": {"type": "string", "enum": ["start", "stop"]}},
        },
        "CaptureAction": {
            "type": "object",
            "required": ["action"],
            "properties": {"action": {"type": "string", "enum": ["start", "stop"]}},
        },
        "PrimaryPorts": {
            "type": "object",
            "required": ["action", "port"],
            "properties": {
                "action": {"type": "string", "enum": ["add", "del"]},
                "port": _ref("PortUid"),
                "rx": {"type": "string", "pattern": "^ring:[0-9]+$", "description": "pipe:N's rx ring"},
                "tx": {"type": "string", "pattern": "^ring:[0-9]+$", "description": "pipe:N's tx ring"},
            },
        },
        "NfvPorts": {
            "type": "object",
            "required": ["action", "port"],
            "properties": {"action": {"type": "string", "enum": ["add", "del"]}, "port": _ref("PortUid")},
        },
        "Patch": {
            "type": "object",
            "required": ["src", "dst"],
            "properties": {"src": _ref("PortUid"), "dst": _ref("PortUid")},
        },
        "Launch": {
            "type": "object",
            "required": ["client_id", "proc_name", "eal", "app"],
            "properties": {
                "client_id": {
                    "oneOf": [
                        {"type": "integer", "minimum": launch.CLIENT_ID_MIN, "maximum": launch.CLIENT_ID_MAX},
                        {"type": "string", "pattern": "^[0-9]+$"},
                    ]
                },
                "proc_name": {"type": "string", "enum": list(launch.PROC_NAMES)},
                "eal": {
                    "type": "object",
                    "description": "EAL options; one of -c, -l, --lcores and --proc-type are required",
                    "properties": {opt: option_value for opt in launch.EAL_OPTS},
                    "additionalProperties": True,
                },
                "app": {
                    "type": "object",
                    "description": "the program's options (others are dropped)",
                    "properties": {opt: option_value for opts in launch.APP_OPTS.values() for opt in opts},
                    "additionalProperties": True,
                },
            },
        },
        "FlowRule": {
            "type": "object",
            "required": ["rule"],
            "properties": {
                "rule": {
                    "type": "object",
                    "required": ["direction", "pattern", "actions"],
                    "properties": {
                        "group": small_int,
                        "priority": small_int,
                        "transfer": {"type": "boolean"},
                        "direction": {"type": "string", "enum": ["ingress", "egress"]},
                        "pattern": {"type": "array", "items": item},
                        "actions": {"type": "array", "items": item},
                    },
                }
            },
        },
        "ComponentStart": {
            "type": "object",
            "required": ["name", "core", "type"],
            "properties": {
                "name": token,
                "core": small_int,
                "type": {
                    "type": "string",
                    "enum": ["forward", "merge", "classifier", "classifier_mac", "mirror"],
                    "description": "vf: forward, merge, classifier (or its old name classifier_mac); mirror",
                },
            },
        },
        "ComponentPort": {
            "type": "object",
            "required": ["action", "port", "dir"],
            "properties": {
                "action": {"type": "string", "enum": ["attach", "detach"]},
                "port": _ref("PortUid"),
                "dir": {"type": "string", "enum": ["rx", "tx"]},
                "vlan": {"oneOf": [vlan_op, {"type": "null"}]},
            },
        },
        "ClassifierTable": {
            "type": "object",
            "required": ["action", "type", "port", "mac_address"],
            "properties": {
                "action": {"type": "string", "enum": ["add", "del"]},
                "type": {"type": "string", "enum": ["mac", "vlan"]},
                "port": _ref("PortUid"),
                "mac_address": {
                    "type": "string",
                    "pattern": "^(default|[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5})$",
                },
                "vlan": digits_or_int,
            },
        },
        "Processes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "enum": ["primary", "nfv", "vf", "mirror", "pcap"]},
                    "client-id": {"type": "integer"},
                    "status": {"type": "string", "enum": ["not responding"]},
                },
            },
        },
        "Status": {"type": "object", "description": "the process's status object (spp-api.md section 3)"},
        "FlowReply": {"type": "object", "description": "the primary's reply to the flow command, verbatim"},
        "CpuLayout": {"type": "array", "items": {"type": "object"}},
        "CpuUsage": {"type": "array", "items": {"type": "object"}},
    }


def _operation(
    summary: str,
    ok: str,
    body: str | None = None,
    result: str | None = None,
    params: tuple[str, ...] = (),
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    if params:
        op["parameters"] = [_param(p) for p in params]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
    if ok == "200":
        content = {JSON: {"schema": _ref(result)}} if result else {JSON: {"schema": {}}}
        op["responses"]["200"] = {"description": "OK", "content": content}
    else:
        op["responses"]["204"] = {"description": "Done (no content)"}
    for code, text in {**ERRORS, **(extra or {})}.items():
        op["responses"][code] = _text(text)
    return op


PARAMS = {
    "sec_id": ("client id of the secondary", 0),
    "port_id": ("phy port number", 0),
    "rule_id": ("flow rule id", 0),
}


def _param(name: str) -> dict[str, Any]:
    if name == "name":
        return {
            "name": "name",
            "in": "path",
            "required": True,
            "description": "component name",
            "schema": {"type": "string", "pattern": r"^[!-~]+$"},
        }
    description, minimum = PARAMS[name]
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"{description} (0..{validate.ID_MAX}; larger is a 400)",
        "schema": {"type": "integer", "minimum": minimum},
    }


def _secondary_paths(kind: str, plural: str) -> dict[str, dict[str, Any]]:
    sec = ("sec_id",)
    base = f"/v1/{plural}/{{sec_id}}"
    paths: dict[str, dict[str, Any]] = {
        base: {
            "get": _operation(f"status of {kind} N", "200", result="Status", params=sec),
            "delete": _operation(f"stop {kind} N (exit)", "204", params=sec),
        }
    }
    if kind == "nfv":
        paths[f"{base}/forward"] = {
            "put": _operation("start or stop forwarding", "204", "ForwardAction", params=sec)
        }
        paths[f"{base}/ports"] = {"put": _operation("add or delete a port", "204", "NfvPorts", params=sec)}
        paths[f"{base}/patches"] = {
            "put": _operation("patch src to dst", "204", "Patch", params=sec),
            "delete": _operation("remove every patch", "204", params=sec),
        }
    if kind in ("vf", "mirror"):
        comp = ("sec_id", "name")
        paths[f"{base}/components"] = {
            "post": _operation("start a component", "204", "ComponentStart", params=sec)
        }
        paths[f"{base}/components/{{name}}"] = {"delete": _operation("stop a component", "204", params=comp)}
        paths[f"{base}/components/{{name}}/ports"] = {
            "put": _operation("attach or detach a component's port", "204", "ComponentPort", params=comp)
        }
    if kind == "vf":
        paths[f"{base}/classifier_table"] = {
            "put": _operation("add or delete a classifier entry", "204", "ClassifierTable", params=sec)
        }
    if kind == "pcap":
        paths[f"{base}/capture"] = {
            "put": _operation("start or stop capturing", "204", "CaptureAction", params=sec)
        }
    return paths


def template(path: str) -> str:
    """An aiohttp route path as an OpenAPI path: ``{sec_id:[0-9]+}`` -> ``{sec_id}``."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def build(route_table: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """The whole document; ``operationId`` is the name of the route's handler."""
    flow = "/v1/primary/flow_rules"
    paths: dict[str, dict[str, Any]] = {
        "/v1/processes": {"get": _operation("registered processes", "200", result="Processes")},
        "/v1/cpu_layout": {"get": _operation("CPU layout of this host", "200", result="CpuLayout")},
        "/v1/cpu_usage": {"get": _operation("lcore usage of every process", "200", result="CpuUsage")},
        "/v1/openapi.json": {"get": _operation("this document", "200")},
        "/v1/primary/status": {
            "get": _operation("status of the primary", "200", result="Status"),
            "delete": _operation("clear the primary's port counters", "204"),
        },
        "/v1/primary/forward": {
            "put": _operation("start or stop the primary's forwarder", "204", "ForwardAction")
        },
        "/v1/primary/ports": {
            "put": _operation("add or delete a port of the primary", "204", "PrimaryPorts")
        },
        "/v1/primary/patches": {
            "put": _operation("patch src to dst in the primary's forwarder", "204", "Patch"),
            "delete": _operation("remove every patch of the primary", "204"),
        },
        "/v1/primary/launch": {
            "put": _operation(
                "start a secondary process", "204", "Launch", extra={"409": "The id is in use."}
            )
        },
        "/v1/primary": {"delete": _operation("stop the primary (exit)", "204")},
        "/v1/primary/": {"delete": _operation("stop the primary (exit), SPP's alternative path", "204")},
        f"{flow}/port_id/{{port_id}}/validate": {
            "post": _operation("validate a flow rule", "200", "FlowRule", "FlowReply", ("port_id",))
        },
        f"{flow}/port_id/{{port_id}}": {
            "post": _operation("create a flow rule", "200", "FlowRule", "FlowReply", ("port_id",)),
            "delete": _operation("destroy every flow rule of a port", "200", None, "FlowReply", ("port_id",)),
        },
        f"{flow}/{{rule_id}}/port_id/{{port_id}}": {
            "delete": _operation("destroy one flow rule", "200", None, "FlowReply", ("rule_id", "port_id"))
        },
    }
    for kind, plural in (("nfv", "nfvs"), ("vf", "vfs"), ("mirror", "mirrors"), ("pcap", "pcaps")):
        paths.update(_secondary_paths(kind, plural))
    seen: set[str] = set()
    for method, path, handler in route_table:
        op = paths[template(path)][method.lower()]
        op_id = getattr(handler, "__name__", str(handler))
        while op_id in seen:
            op_id += "_again"
        seen.add(op_id)
        op["operationId"] = op_id
        op["summary"] = SUMMARIES.get((method, template(path)), op["summary"])
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "soft-patch-panel spp-ctl REST API",
            "version": "v1",
            "description": "SPP's REST API v1 (Soft Patch Panel), as served by spp-ctl. Bodies are "
            "JSON whatever the Content-Type; errors are text/plain messages.",
        },
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
