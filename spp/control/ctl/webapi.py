"""The REST API v1 (spp-api.md §3) on aiohttp: routes, request checks, reply interpretation.

Conventions kept from SPP's bottle app, byte for byte where a client could notice:

* success: ``None`` -> 204 with empty body; data -> 200, ``Content-Type: application/json``,
  ``json.dumps(data)`` with Python's default separators;
* errors: ``Content-Type: text/plain`` with SPP's verbatim messages; unmatched URL ->
  ``404 Not found: '<path relative to the sub-app SPP mounted it in>'``; wrong method ->
  ``405 Method not allowed.``;
* POST/PUT bodies are JSON whatever the Content-Type; secondary endpoints look the process up
  (404) before parsing the body (400), primary endpoints parse first.

What the handlers do differently from SPP is listed in :mod:`spp.control.ctl` (package docstring).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import cpu, launch, openapi, validate
from .errors import ERRORS_KEY, ApiError, BadReply, ErrorCounts, NotFound, ProcessUnavailable
from .httpguard import HostPolicy
from .registry import Proc, Registry
from .wire import ConnectionClosed, Reply, ReplyTimeout

LOG = logging.getLogger(__name__)

MOUNTS = ("/v1/primary/flow_rules", "/v1/primary", "/v1/vfs", "/v1/mirrors", "/v1/nfvs", "/v1/pcaps", "/v1")
"""Where SPP mounted its bottle sub-apps; 404 messages show the path relative to the innermost one."""

FLOW_FAILURES_ARE_ERRORS = False
"""Flow endpoints return the primary's reply verbatim with 200, also for ``"result": "error"``
(spp-api.md §3.4/§10.4): the reply *is* the response body, so nothing is hidden from the client
and the SPP CLI prints its ``message`` either way. Set True to turn such replies into 400s."""

LIST_DEADLINE = 0.8
"""Seconds ``GET /v1/processes`` and ``/v1/cpu_usage`` wait for the processes' answers at most."""

NOT_RESPONDING = "not responding"
"""``status`` of a listed process that is stopped or has not answered its last command in time."""

VF_PORT_KEYS = ("phy", "vhost", "ring")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- responses ----------------------------------------------------------------------------------


def text_response(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=message.encode(), headers={"Content-Type": "text/plain"})


def data_response(data: Any) -> web.Response:
    """204 for None, else 200 + ``json.dumps(data)`` exactly as SPP (default separators)."""
    if data is None:
        return web.Response(status=204)
    return web.Response(
        status=200, body=json.dumps(data).encode(), headers={"Content-Type": "application/json"}
    )


def not_found_message(path: str) -> str:
    """SPP's 404 text: the path as seen by the innermost bottle sub-app that matched its prefix."""
    for prefix in MOUNTS:
        if path == prefix or path.startswith(prefix + "/"):
            path = path[len(prefix) :] or "/"
            break
    return f"Not found: {path!r}"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to a status + plain-text message; a 500 only for our own bugs."""
    LOG.info("%s %s called", request.method, request.path)
    try:
        response = await handler(request)
    except ApiError as exc:
        if exc.status >= 500:
            LOG.warning("%s %s: %s", request.method, request.path, exc.message)
        response = text_response(exc.status, exc.message)
    except web.HTTPMethodNotAllowed as exc:
        response = text_response(405, "Method not allowed.")
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    except web.HTTPNotFound:
        response = text_response(404, not_found_message(request.path))
    except web.HTTPException as exc:  # aiohttp's own, e.g. 413 body too large
        response = text_response(exc.status, exc.reason)
    except Exception:
        LOG.exception("internal error handling %s %s", request.method, request.path)
        response = text_response(500, "Internal Server Error")
    errors = request.app.get(ERRORS_KEY)
    if errors is not None:
        errors.count(request.method, request.path, response.status)
    if response.status >= 400 and isinstance(response, web.Response) and response.body:
        LOG.info("response: %d %s", response.status, bytes(response.body).decode(errors="replace")[:300])
    else:
        LOG.info("response: %d", response.status)
    return response


# -- reply interpretation -----------------------------------------------------------------------


def check_reply(command: str, reply: Reply) -> None:
    """Raise 400 if a process reply reports a failure.

    * vf/mirror/pcap style ``{"results": [{"result": "error", "error_details": {"message": M}}]}``
      -> ``command error: M`` (SPP's behaviour);
    * primary/nfv style ``{"result": "failed"|"error", "message": M}`` -> ``M``, or
      ``command failed: <command>`` without a message (SPP ignored these and answered 204);
    * a non-JSON reply is the C processes' echo: success for ``patch reset`` (that is how they
      answer it), a failure for anything else (they echo what they could not execute).
    """
    if isinstance(reply, str):
        if command == "patch reset":
            return
        raise ApiError(400, f"command failed: {command}")
    if not isinstance(reply, dict):
        return
    results = reply.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict):
        first = results[0]
        if first.get("result") in ("error", "failed"):
            details = first.get("error_details")
            message = details.get("message") if isinstance(details, dict) else None
            message = message or reply.get("message")
            raise ApiError(400, f"command error: {message}" if message else f"command failed: {command}")
    if reply.get("result") in ("failed", "error"):
        message = reply.get("message")
        raise ApiError(400, message if isinstance(message, str) and message else f"command failed: {command}")


def expect_object(proc: Proc, command: str, reply: Reply) -> dict[str, Any]:
    """A reply that must be a JSON object (status, flow); otherwise 502."""
    if not isinstance(reply, dict):
        raise BadReply(f"{proc.label} sent an unexpected reply to '{command}': {str(reply)[:200]!r}")
    return reply


def convert_vf_info(proc: Proc, reply: dict[str, Any]) -> dict[str, Any]:
    """vf/mirror ``status`` -> REST shape (§3.6): ports as ``type:idx``, components from ``core``."""
    info = reply.get("info")
    if not isinstance(info, dict):
        raise BadReply(f"{proc.label} sent a status reply without 'info'")
    out: dict[str, Any] = {"client-id": info.get("client-id", proc.id), "ports": []}
    for key in VF_PORT_KEYS:
        for idx in info.get(key) or []:
            out["ports"].append(f"{key}:{idx}")
    out["master-lcore"] = info.get("master-lcore")
    out["components"] = info.get("core", [])
    if "classifier_table" in info:
        out["classifier_table"] = info["classifier_table"]
    if "stats" in info:  # not in SPP: the process's own counters per port, as nfv's
        out["stats"] = info["stats"]
    return out


# -- handlers -----------------------------------------------------------------------------------


class Api:
    """All v1 handlers; they share the process :class:`Registry`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._openapi: bytes | None = None

    # helpers

    def _primary(self) -> Proc:
        proc = self.registry.primary()
        if proc is None:
            raise NotFound("primary not found.")
        return proc

    def _secondary(self, request: web.Request, proc_type: str) -> Proc:
        sec_id = validate.url_id(request.match_info["sec_id"], "sec_id")
        proc = self.registry.secondary(sec_id, proc_type)
        if proc is None:
            raise NotFound(f"sec_id {sec_id} not found.")
        return proc

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        body = validate.parse_body(await request.read())
        LOG.debug("body: %s", body)
        return body

    async def _run(self, proc: Proc, command: str, timeout: float | None = None) -> Reply:
        """Send a command whose reply only says whether it worked; 400 if it did not."""
        reply = await self.registry.command(proc, command, timeout)
        check_reply(command, reply)
        return reply

    async def _status(self, proc: Proc) -> dict[str, Any]:
        reply = expect_object(proc, "status", await self.registry.command(proc, "status"))
        check_reply("status", reply)
        return reply

    async def _exit(self, proc: Proc) -> None:
        """Remove first, then send ``exit`` (SPP's order: the entry goes even if exit fails), then
        wait until the process has closed its connection, which it does only by ending: when
        this returns the process is gone and its id can be used again at once."""
        self.registry.remove(proc)
        LOG.info("%s: command 'exit'", proc.label)
        timeout = self.registry.command_timeout
        try:
            reply = await proc.conn.request("exit", timeout)
            check_reply("exit", reply)
        except ConnectionClosed:
            LOG.info("%s: gone before answering 'exit'", proc.label)
            return None
        except ReplyTimeout as exc:
            proc.conn.close()
            raise ProcessUnavailable(f"{proc.label} did not answer 'exit'; it has been removed.") from exc
        except ApiError:
            proc.conn.close()
            raise
        if not await proc.conn.wait_closed(timeout):
            proc.conn.close()
            raise ProcessUnavailable(
                f"{proc.label} answered 'exit' but was still running {timeout:g} s later; it has been "
                "removed, and its id may stay in use until it ends."
            )
        LOG.info("%s: exited", proc.label)
        return None

    # /v1

    async def get_processes(self, request: web.Request) -> web.Response:
        """SPP's list; a process that is stopped or overdue with a reply gets ``"status"``.

        The probe weeds out processes that are connected but dead; it is given
        :data:`LIST_DEADLINE` at most, so one stuck process cannot stall the listing.
        """
        secondaries = [p for p in self.registry.all() if p.type != "primary"]
        await self.registry.probe(secondaries, deadline=LIST_DEADLINE)
        procs = []
        for proc in self.registry.all():
            entry: dict[str, Any] = {"type": proc.type}
            if proc.type != "primary":
                entry["client-id"] = proc.id
            if not self.registry.responding(proc):
                entry["status"] = NOT_RESPONDING
            procs.append(entry)
        return data_response(procs)

    async def get_openapi(self, request: web.Request) -> web.Response:
        if self._openapi is None:
            self._openapi = json.dumps(openapi.build(routes(self))).encode()
        return web.Response(status=200, body=self._openapi, headers={"Content-Type": "application/json"})

    async def get_cpu_layout(self, request: web.Request) -> web.Response:
        return data_response(cpu.cpu_layout())

    async def get_cpu_usage(self, request: web.Request) -> web.Response:
        replies = await self.registry.probe(self.registry.all(), deadline=LIST_DEADLINE)
        usage = []
        for proc in self.registry.all():
            if proc.id in replies:
                entry = cpu.usage_entry(proc.type, proc.id, replies[proc.id])
                if entry is not None:
                    usage.append(entry)
        return data_response(usage)

    # /v1/primary

    async def primary_status(self, request: web.Request) -> web.Response:
        return data_response(await self._status(self._primary()))

    async def primary_clear(self, request: web.Request) -> web.Response:
        await self._run(self._primary(), "clear")
        return data_response(None)

    async def primary_forward(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        proc = self._primary()
        command = "forward" if validate.action(body, ("start", "stop")) == "start" else "stop"
        await self._run(proc, command)
        return data_response(None)

    async def primary_ports(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        validate.require(body, ["action", "port"])
        act = validate.one_of(body, "action", ("add", "del"))
        port = validate.port(body, "port")
        proc = self._primary()
        if act == "add" and port.startswith("pipe:"):
            validate.require(body, ["rx", "tx"])
            rx = validate.port(body, "rx", ["ring"])
            tx = validate.port(body, "tx", ["ring"])
            command = f"add {port} {rx} {tx}"
        else:
            command = f"{act} {port}"
        await self._run(proc, command)
        return data_response(None)

    async def primary_patch(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        proc = self._primary()
        await self._patch(proc, body)
        return data_response(None)

    async def _patch(self, proc: Proc, body: dict[str, Any]) -> None:
        validate.require(body, ["src", "dst"])
        src = validate.port(body, "src")
        dst = validate.port(body, "dst")
        await self._run(proc, f"patch {src} {dst}")

    async def primary_patch_reset(self, request: web.Request) -> web.Response:
        await self._run(self._primary(), "patch reset")
        return data_response(None)

    async def primary_launch(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        validate.require(body, ["client_id", "proc_name", "eal", "app"])
        proc = self._primary()
        cid, command = launch.build_launch(body)
        if self.registry.get(cid) is not None:
            raise ApiError(409, f"Secondary ID {cid} is already used.")
        reply = await self._run(proc, command, timeout=self.registry.launch_timeout)
        await launch.await_registration(self.registry, proc, cid, reply)
        return data_response(None)

    async def primary_exit(self, request: web.Request) -> web.Response:
        await self._exit(self._primary())
        return data_response(None)

    # /v1/primary/flow_rules

    async def _flow(self, command: str) -> web.Response:
        proc = self._primary()
        reply = expect_object(proc, command, await self.registry.command(proc, command))
        if FLOW_FAILURES_ARE_ERRORS:
            check_reply(command, reply)
        return data_response(reply)

    @staticmethod
    def _flow_command(sub_command: str, port_id: str, rule: dict[str, Any]) -> str:
        """SPP's exact string: attributes group, priority, transfer, direction, then pattern/actions."""
        attrs = ""
        if "group" in rule:
            attrs += f"group {rule['group']} "
        if "priority" in rule:
            attrs += f"priority {rule['priority']} "
        if rule.get("transfer"):
            attrs += "transfer "
        attrs += rule["direction"]
        pattern = " / ".join(rule["pattern"])
        actions = " / ".join(rule["actions"])
        phy = validate.url_id(port_id, "port_id")
        return f"flow {sub_command} phy:{phy} {attrs} pattern {pattern} / end actions {actions} / end"

    async def flow_validate(self, request: web.Request) -> web.Response:
        rule = validate.flow_rule(await self._body(request))
        return await self._flow(self._flow_command("validate", request.match_info["port_id"], rule))

    async def flow_create(self, request: web.Request) -> web.Response:
        rule = validate.flow_rule(await self._body(request))
        return await self._flow(self._flow_command("create", request.match_info["port_id"], rule))

    async def flow_destroy_all(self, request: web.Request) -> web.Response:
        port_id = validate.url_id(request.match_info["port_id"], "port_id")
        return await self._flow(f"flow destroy phy:{port_id} ALL")

    async def flow_destroy(self, request: web.Request) -> web.Response:
        port_id = validate.url_id(request.match_info["port_id"], "port_id")
        rule_id = validate.url_id(request.match_info["rule_id"], "rule_id")
        return await self._flow(f"flow destroy phy:{port_id} {rule_id}")

    # /v1/nfvs/{id}

    async def nfv_get(self, request: web.Request) -> web.Response:
        return data_response(await self._status(self._secondary(request, "nfv")))

    async def nfv_exit(self, request: web.Request) -> web.Response:
        await self._exit(self._secondary(request, "nfv"))
        return data_response(None)

    async def nfv_forward(self, request: web.Request) -> web.Response:
        proc = self._secondary(request, "nfv")
        body = await self._body(request)
        command = "forward" if validate.action(body, ("start", "stop")) == "start" else "stop"
        await self._run(proc, command)
        return data_response(None)

    async def nfv_ports(self, request: web.Request) -> web.Response:
        proc = self._secondary(request, "nfv")
        body = await self._body(request)
        validate.require(body, ["action", "port"])
        act = validate.one_of(body, "action", ("add", "del"))
        port = validate.port(body, "port")
        await self._run(proc, f"{act} {port}")
        return data_response(None)

    async def nfv_patch(self, request: web.Request) -> web.Response:
        proc = self._secondary(request, "nfv")
        await self._patch(proc, await self._body(request))
        return data_response(None)

    async def nfv_patch_reset(self, request: web.Request) -> web.Response:
        await self._run(self._secondary(request, "nfv"), "patch reset")
        return data_response(None)

    # /v1/vfs/{id} and /v1/mirrors/{id}

    async def _worker_get(self, request: web.Request, proc_type: str) -> web.Response:
        proc = self._secondary(request, proc_type)
        return data_response(convert_vf_info(proc, await self._status(proc)))

    async def _worker_exit(self, request: web.Request, proc_type: str) -> web.Response:
        await self._exit(self._secondary(request, proc_type))
        return data_response(None)

    async def _comp_start(self, request: web.Request, proc_type: str, types: tuple[str, ...]) -> web.Response:
        proc = self._secondary(request, proc_type)
        body = await self._body(request)
        validate.require(body, ["name", "core", "type"])
        name = validate.token(body["name"], "name")
        core = validate.strict_int(body["core"], "core")
        comp_type = validate.one_of(body, "type", types)
        await self._run(proc, f"component start {name} {core} {comp_type}")
        return data_response(None)

    async def _comp_stop(self, request: web.Request, proc_type: str) -> web.Response:
        proc = self._secondary(request, proc_type)
        name = validate.token(request.match_info["name"], "name")
        await self._run(proc, f"component stop {name}")
        return data_response(None)

    async def _comp_port(self, request: web.Request, proc_type: str) -> web.Response:
        proc = self._secondary(request, proc_type)
        body = await self._body(request)
        validate.require(body, ["action", "port", "dir"])
        act = validate.one_of(body, "action", ("attach", "detach"))
        direction = validate.one_of(body, "dir", ("rx", "tx"))
        port = validate.port(body, "port")
        name = validate.token(request.match_info["name"], "name")
        if act == "detach":
            command = f"port del {port} {direction} {name}"
        else:
            vlan = validate.vlan_option(body) if proc_type == "vf" else ""
            command = f"port add {port} {direction} {name}{vlan}"
        await self._run(proc, command)
        return data_response(None)

    async def vf_get(self, request: web.Request) -> web.Response:
        return await self._worker_get(request, "vf")

    async def vf_exit(self, request: web.Request) -> web.Response:
        return await self._worker_exit(request, "vf")

    async def vf_comp_start(self, request: web.Request) -> web.Response:
        # classifier_mac: SPP 18.08's name, still sent by networking-spp's agent.
        return await self._comp_start(request, "vf", ("forward", "merge", "classifier", "classifier_mac"))

    async def vf_comp_stop(self, request: web.Request) -> web.Response:
        return await self._comp_stop(request, "vf")

    async def vf_comp_port(self, request: web.Request) -> web.Response:
        return await self._comp_port(request, "vf")

    async def vf_classifier(self, request: web.Request) -> web.Response:
        proc = self._secondary(request, "vf")
        body = await self._body(request)
        validate.require(body, ["action", "type", "port", "mac_address"])
        act = validate.one_of(body, "action", ("add", "del"))
        cls_type = validate.one_of(body, "type", ("mac", "vlan"))
        port = validate.port(body, "port")
        mac = validate.mac_address(body["mac_address"])
        if cls_type == "vlan":
            validate.require(body, ["vlan"])
            vid = validate.uint(body["vlan"], "vlan", validate.VLAN_ID_MAX)
            command = f"classifier_table {act} vlan {vid} {mac} {port}"
        else:
            command = f"classifier_table {act} mac {mac} {port}"
        await self._run(proc, command)
        return data_response(None)

    async def mirror_get(self, request: web.Request) -> web.Response:
        return await self._worker_get(request, "mirror")

    async def mirror_exit(self, request: web.Request) -> web.Response:
        return await self._worker_exit(request, "mirror")

    async def mirror_comp_start(self, request: web.Request) -> web.Response:
        return await self._comp_start(request, "mirror", ("mirror",))

    async def mirror_comp_stop(self, request: web.Request) -> web.Response:
        return await self._comp_stop(request, "mirror")

    async def mirror_comp_port(self, request: web.Request) -> web.Response:
        return await self._comp_port(request, "mirror")

    # /v1/pcaps/{id}

    async def pcap_get(self, request: web.Request) -> web.Response:
        proc = self._secondary(request, "pcap")
        reply = await self._status(proc)
        info = reply.get("info")
        if not isinstance(info, dict):
            raise BadReply(f"{proc.label} sent a status reply without 'info'")
        return data_response(info)

    async def pcap_exit(self, request: web.Request) -> web.Response:
        await self._exit(self._secondary(request, "pcap"))
        return data_response(None)

    async def pcap_capture(self, request: web.Request) -> web.Response:
        proc = self._secondary(request, "pcap")
        body = await self._body(request)
        await self._run(proc, validate.action(body, ("start", "stop")))
        return data_response(None)


SEC = r"{sec_id:[0-9]+}"
PORT_ID = r"{port_id:[0-9]+}"
RULE_ID = r"{rule_id:[0-9]+}"


def routes(api: Api) -> list[tuple[str, str, Handler]]:
    """(method, path, handler) for every v1 endpoint of spp-api.md §3.2."""
    return [
        ("GET", "/v1/processes", api.get_processes),
        ("GET", "/v1/openapi.json", api.get_openapi),
        ("GET", "/v1/cpu_layout", api.get_cpu_layout),
        ("GET", "/v1/cpu_usage", api.get_cpu_usage),
        ("GET", "/v1/primary/status", api.primary_status),
        ("DELETE", "/v1/primary/status", api.primary_clear),
        ("PUT", "/v1/primary/forward", api.primary_forward),
        ("PUT", "/v1/primary/ports", api.primary_ports),
        ("PUT", "/v1/primary/patches", api.primary_patch),
        ("DELETE", "/v1/primary/patches", api.primary_patch_reset),
        ("PUT", "/v1/primary/launch", api.primary_launch),
        ("DELETE", "/v1/primary", api.primary_exit),
        ("DELETE", "/v1/primary/", api.primary_exit),  # bottle routed both to the sub-app's '/'
        ("POST", f"/v1/primary/flow_rules/port_id/{PORT_ID}/validate", api.flow_validate),
        ("POST", f"/v1/primary/flow_rules/port_id/{PORT_ID}", api.flow_create),
        ("DELETE", f"/v1/primary/flow_rules/port_id/{PORT_ID}", api.flow_destroy_all),
        ("DELETE", f"/v1/primary/flow_rules/{RULE_ID}/port_id/{PORT_ID}", api.flow_destroy),
        ("GET", f"/v1/nfvs/{SEC}", api.nfv_get),
        ("DELETE", f"/v1/nfvs/{SEC}", api.nfv_exit),
        ("PUT", f"/v1/nfvs/{SEC}/forward", api.nfv_forward),
        ("PUT", f"/v1/nfvs/{SEC}/ports", api.nfv_ports),
        ("PUT", f"/v1/nfvs/{SEC}/patches", api.nfv_patch),
        ("DELETE", f"/v1/nfvs/{SEC}/patches", api.nfv_patch_reset),
        ("GET", f"/v1/vfs/{SEC}", api.vf_get),
        ("DELETE", f"/v1/vfs/{SEC}", api.vf_exit),
        ("POST", f"/v1/vfs/{SEC}/components", api.vf_comp_start),
        ("DELETE", f"/v1/vfs/{SEC}/components/{{name}}", api.vf_comp_stop),
        ("PUT", f"/v1/vfs/{SEC}/components/{{name}}/ports", api.vf_comp_port),
        ("PUT", f"/v1/vfs/{SEC}/classifier_table", api.vf_classifier),
        ("GET", f"/v1/mirrors/{SEC}", api.mirror_get),
        ("DELETE", f"/v1/mirrors/{SEC}", api.mirror_exit),
        ("POST", f"/v1/mirrors/{SEC}/components", api.mirror_comp_start),
        ("DELETE", f"/v1/mirrors/{SEC}/components/{{name}}", api.mirror_comp_stop),
        ("PUT", f"/v1/mirrors/{SEC}/components/{{name}}/ports", api.mirror_comp_port),
        ("GET", f"/v1/pcaps/{SEC}", api.pcap_get),
        ("DELETE", f"/v1/pcaps/{SEC}", api.pcap_exit),
        ("PUT", f"/v1/pcaps/{SEC}/capture", api.pcap_capture),
    ]


def make_app(registry: Registry, policy: HostPolicy | None = None) -> web.Application:
    """The aiohttp application serving REST v1 for ``registry``, guarded by ``policy``; it counts
    failed requests in ``app[ERRORS_KEY]`` (:mod:`.web` adds ``/metrics`` and the page)."""
    policy = policy or HostPolicy()
    app = web.Application(middlewares=[policy.middleware(), error_middleware])
    app[ERRORS_KEY] = ErrorCounts.new()
    api = Api(registry)
    for method, path, handler in routes(api):
        if method == "GET":
            app.router.add_get(path, handler)  # also answers HEAD, as bottle did
        else:
            app.router.add_route(method, path, handler)
    return app
