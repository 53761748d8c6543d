"""Operator tools: what devstack and Neutron's drivers do in etcd, without OpenStack.

``config_build``/``config_destroy`` are devstack's ``spp-config-build.py``/``-destroy.py``;
``plug``/``unplug`` are the ML2 mechanism driver's ``bind_port``/``_unplug_port``, and
``tap_create``/``tap_delete`` the TaaS driver's, key for key (spec §2), with the original's
races closed: the wait for ``up`` reads before it watches, and the destroy prefixes end in
``/`` (host ``spp4`` no longer wipes ``spp40``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from spp.integrations.agent import keys
from spp.integrations.agent.etcd import Etcd
from spp.integrations.agent.keys import BadValue, BindPort, TapInfo
from spp.integrations.agent.layout import (
    build_configuration,
    parse_configuration,
    parse_mappings,
)

PLUG_TIMEOUT = 20.0  # the mechanism driver's WAIT_PLUG_TIMEOUT
TAP_TIMEOUT = 30.0  # the TaaS driver's WAIT_TAP_TIMEOUT


class ToolError(RuntimeError):
    """What the operator asked cannot be done; the message says why."""


# -- devstack -----------------------------------------------------------------------------------


async def config_build(
    etcd: Etcd,
    host: str,
    mappings: str,
    mirror: str | None = None,
    force: bool = False,
    component_conf: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``configuration/<host>``, every ``vhost/<host>/<physnet>/<id>`` and ``mirror`` key
    as ``None``. Refuses while ports or taps are bound on the host, unless ``force``."""
    try:
        config = build_configuration(parse_mappings(mappings), mirror, component_conf)
        layout = parse_configuration(json.dumps(config))
    except BadValue as e:
        raise ToolError(str(e)) from None
    if not force:
        used = [
            kv.key
            for kind in ("vhost", "mirror")
            for kv in (await _prefix(etcd, kind, host))
            if kv.value != keys.FREE
        ]
        if used:
            raise ToolError(
                f"host {host} has bound ports or taps ({', '.join(used[:3])}...); unplug them or use --force"
            )
    await etcd.put(keys.configuration_key(host), json.dumps(config))
    await etcd.delete_prefix(keys.vhost_prefix(host))
    await etcd.delete_prefix(keys.host_prefix("mirror", host))
    for vh in sorted(layout.vhosts.values(), key=lambda v: v.vhost_id):
        await etcd.put(keys.vhost_key(host, vh.physnet, vh.vhost_id), keys.FREE)
    for m in layout.mirrors:
        await etcd.put(keys.key("mirror", host, m.mirror_id), keys.FREE)
    return config


async def config_destroy(etcd: Etcd, host: str) -> None:
    await etcd.delete(keys.configuration_key(host))
    for kind in keys.HOST_KINDS:
        await etcd.delete_prefix(keys.host_prefix(kind, host))


async def _prefix(etcd: Etcd, kind: str, host: str) -> list[Any]:
    kvs, _ = await etcd.get_prefix(keys.host_prefix(kind, host))
    return kvs


async def require_agent(etcd: Etcd, host: str) -> None:
    """ToolError unless ``host``'s agent is alive: its ``agent/<host>`` key (held under a lease,
    gone once the agent stopped or lost etcd for a lease's time) exists. Checked before anything
    is written, so a plug for a host without an agent fails at once instead of waiting for an
    ``up`` that never comes (Neutron's driver checks its agent's liveness the same way)."""
    if await etcd.get(keys.agent_key(host)) is None:
        raise ToolError(
            f"no spp-agent is alive on host {host} ({keys.agent_key(host)} is absent): "
            "start spp-agent there, or check --host"
        )


async def configuration(etcd: Etcd, host: str) -> Any:
    text = await etcd.get(keys.configuration_key(host))
    if text is None:
        raise ToolError(f"host {host} has no configuration in etcd (run 'spp-agent config build')")
    try:
        return parse_configuration(text)
    except BadValue as e:
        raise ToolError(f"host {host}: {e}") from None


# -- the mechanism driver -------------------------------------------------------------------------


@dataclass
class PlugResult:
    port_id: str
    host: str
    vhost_id: int
    up: bool

    def vif(self) -> dict[str, Any]:
        """What the driver hands Nova (``set_binding``) when the port came up."""
        return {
            "port_id": self.port_id,
            "host": self.host,
            "vif_type": "vhostuser" if self.up else "binding_failed",
            "vif_details": {
                "port_filter": False,
                "vhostuser_mode": "server",
                "vhostuser_socket": f"/tmp/sock{self.vhost_id}",
            },
        }


async def plug(
    etcd: Etcd,
    host: str,
    physnet: str,
    mac: str,
    port_id: str | None = None,
    vlan: int | None = None,
    timeout: float = PLUG_TIMEOUT,
) -> PlugResult:
    """``bind_port``: check the host's agent is alive, claim the first free vhost of ``physnet``
    (key order, compare-and-swap of ``None``), write ``bind_port`` and ``action`` = ``plug``,
    wait for ``port_status`` ``up``."""
    port_id = port_id or str(uuid.uuid4())
    if "/" in port_id or not port_id:
        raise ToolError(f"bad port id {port_id!r}")
    try:
        mac = keys.normalize_mac(mac)
    except BadValue as e:
        raise ToolError(str(e)) from None
    if vlan is not None and not 1 <= vlan <= 4094:
        raise ToolError(f"VLAN id {vlan} is not 1..4094")
    layout = await configuration(etcd, host)
    if physnet not in layout.physnets():
        raise ToolError(
            f"host {host} has no physical network {physnet!r} (it has {', '.join(layout.physnets())})"
        )
    if await etcd.get(keys.key("bind_port", host, port_id)) is not None:
        raise ToolError(f"port {port_id} was bound on {host} before (bind_port exists): unplug it first")
    await require_agent(etcd, host)
    kvs, _ = await etcd.get_prefix(keys.vhost_prefix(host, physnet))
    vhost_id = None
    for kv in kvs:
        if kv.value == keys.FREE and await etcd.replace(kv.key, keys.FREE, port_id):
            vhost_id = int(kv.key.rsplit("/", 1)[1])
            break
    if vhost_id is None:
        raise ToolError(f"no free vhost for {physnet} on {host}")
    bp = BindPort(mac, vhost_id, vlan)
    await etcd.put(keys.key("bind_port", host, port_id), bp.dumps())
    await etcd.put(keys.key("action", host, port_id), keys.PLUG)
    up = await etcd.wait_for_value(keys.key("port_status", host, port_id), keys.UP, timeout)
    return PlugResult(port_id, host, vhost_id, up)


async def unplug(etcd: Etcd, host: str, port_id: str, wait: float = 0.0) -> bool:
    """``_unplug_port``: ``action`` = ``unplug`` if the action key exists. With ``wait``, also
    wait until the agent removed it (the driver does not wait)."""
    akey = keys.key("action", host, port_id)
    if await etcd.get(akey) is None:
        return False
    await etcd.put(akey, keys.UNPLUG)
    if wait:
        return await wait_gone(etcd, akey, wait)
    return True


async def wait_gone(etcd: Etcd, key: str, timeout: float) -> bool:
    """Whether ``key`` is deleted within ``timeout`` s (through leader changes and failovers)."""
    return await etcd.wait_for(key, lambda value: value is None, timeout)


# -- the TaaS driver ------------------------------------------------------------------------------


async def host_of(etcd: Etcd, port_id: str) -> str:
    kvs, _ = await etcd.get_prefix(f"{keys.ROOT}bind_port/")
    for kv in kvs:
        host, _, port = kv.key[len(keys.ROOT) + len("bind_port/") :].partition("/")
        if port == port_id:
            return host
    raise ToolError(f"port {port_id} is not bound on any SPP host")


async def tap_create(
    etcd: Etcd,
    service_port: str,
    source_port: str,
    direction: str,
    flow_id: str | None = None,
    timeout: float = TAP_TIMEOUT,
) -> tuple[str, bool]:
    """``create_tap_flow_postcommit``: both ports bound on the same host, whose agent is alive, a
    mirror per direction claimed, ``tap_info`` and ``tap_action`` = ``plug`` written, ``up`` awaited."""
    direction = direction.upper()
    if direction not in ("IN", "OUT", "BOTH"):
        raise ToolError(f"direction must be IN, OUT or BOTH, not {direction!r}")
    flow_id = flow_id or str(uuid.uuid4())
    host = await host_of(etcd, source_port)
    if await etcd.get(keys.key("bind_port", host, service_port)) is None:
        raise ToolError(f"service port {service_port} is not bound on {host}, the source port's host")
    await require_agent(etcd, host)
    claimed: list[int] = []

    async def claim() -> int:
        kvs, _ = await etcd.get_prefix(keys.host_prefix("mirror", host))
        for kv in kvs:
            if kv.value == keys.FREE and await etcd.replace(kv.key, keys.FREE, flow_id):
                claimed.append(int(kv.key.rsplit("/", 1)[1]))
                return claimed[-1]
        for mid in claimed:
            await etcd.put(keys.key("mirror", host, mid), keys.FREE)
        raise ToolError(f"no free mirror on {host}")

    m_in = await claim() if direction in ("IN", "BOTH") else None
    m_out = await claim() if direction in ("OUT", "BOTH") else None
    info = TapInfo(service_port, source_port, m_in, m_out)
    await etcd.put(keys.key("tap_info", host, flow_id), info.dumps())
    await etcd.put(keys.key("tap_action", host, flow_id), keys.PLUG)
    up = await etcd.wait_for_value(keys.key("tap_status", host, flow_id), keys.UP, timeout)
    return flow_id, up


async def tap_delete(etcd: Etcd, flow_id: str, host: str | None = None, wait: float = 0.0) -> bool:
    """``delete_tap_flow_postcommit``: ``tap_action`` = ``unplug`` if it exists."""
    hosts = [host] if host else await hosts_with(etcd, "tap_action", flow_id)
    for h in hosts:
        akey = keys.key("tap_action", h, flow_id)
        if await etcd.get(akey) is not None:
            await etcd.put(akey, keys.UNPLUG)
            return await wait_gone(etcd, akey, wait) if wait else True
    return False


async def hosts_with(etcd: Etcd, kind: str, ident: str) -> list[str]:
    kvs, _ = await etcd.get_prefix(f"{keys.ROOT}{kind}/")
    out = []
    for kv in kvs:
        host, _, rest = kv.key[len(keys.ROOT) + len(kind) + 1 :].partition("/")
        if rest == ident:
            out.append(host)
    return out


# -- status view -----------------------------------------------------------------------------------


async def status(etcd: Etcd, host: str | None = None) -> dict[str, Any]:
    """Every host's ports and taps as etcd has them: ``{host: {"agent": ..., "ports": [...],
    "taps": [...], "free_vhosts": N}}``."""
    kvs, _ = await etcd.get_prefix(keys.ROOT)
    tree: dict[str, dict[str, dict[str, str]]] = {}
    configs: dict[str, str] = {}
    agents: dict[str, str] = {}
    for kv in kvs:
        rest = kv.key[len(keys.ROOT) :]
        kind, _, tail = rest.partition("/")
        if kind == "configuration":
            configs[tail] = kv.value
            continue
        if kind == "agent":
            agents[tail] = kv.value
            continue
        h, _, ident = tail.partition("/")
        tree.setdefault(h, {}).setdefault(kind, {})[ident] = kv.value
    out: dict[str, Any] = {}
    for h in sorted(set(configs) | set(tree) | set(agents)):
        if host and h != host:
            continue
        t = tree.get(h, {})
        ports = []
        for pid in sorted(set(t.get("bind_port", {})) | set(t.get("action", {}))):
            entry: dict[str, Any] = {"port": pid, "action": t.get("action", {}).get(pid)}
            entry["status"] = t.get("port_status", {}).get(pid, "-")
            try:
                bp = BindPort.parse(t.get("bind_port", {}).get(pid, ""))
                entry.update(vhost=bp.vhost_id, mac=bp.mac, vlan=bp.vlan_id)
            except BadValue as e:
                entry["error"] = str(e)
            ports.append(entry)
        taps = []
        for tf in sorted(set(t.get("tap_info", {})) | set(t.get("tap_action", {}))):
            tentry: dict[str, Any] = {"flow": tf, "action": t.get("tap_action", {}).get(tf)}
            tentry["status"] = t.get("tap_status", {}).get(tf, "-")
            try:
                ti = TapInfo.parse(t.get("tap_info", {}).get(tf, ""))
                tentry.update(
                    source=ti.source_port,
                    service=ti.service_port,
                    mirror_in=ti.mirror_in,
                    mirror_out=ti.mirror_out,
                )
            except BadValue as e:
                tentry["error"] = str(e)
            taps.append(tentry)
        vhosts = t.get("vhost", {})
        agent = None
        if h in agents:
            try:
                agent = json.loads(agents[h])
            except ValueError:
                agent = {"raw": agents[h]}
        out[h] = {
            "agent": agent,
            "configured": h in configs,
            "free_vhosts": sum(v == keys.FREE for v in vhosts.values()),
            "vhosts": len(vhosts),
            "ports": ports,
            "taps": taps,
        }
    return out


def format_status(view: dict[str, Any]) -> str:
    lines = []
    for host, h in view.items():
        agent = "agent up" if h["agent"] else "agent DOWN"
        if h["agent"] and h["agent"].get("api"):
            agent += f" (spp-ctl {h['agent']['api']})"
        conf = "" if h["configured"] else ", not configured"
        lines.append(f"host {host}: {agent}, {h['free_vhosts']}/{h['vhosts']} vhosts free{conf}")
        if h["ports"]:
            lines.append(f"  {'PORT':36}  {'VHOST':>5}  {'MAC':17}  {'VLAN':>4}  {'ACTION':6}  STATUS")
        for p in h["ports"]:
            if "error" in p:
                lines.append(f"  {p['port']:36}  bad bind_port: {p['error']}")
                continue
            vlan = "-" if p["vlan"] is None else str(p["vlan"])
            lines.append(
                f"  {p['port']:36}  {p['vhost']:>5}  {p['mac']:17}  {vlan:>4}  "
                f"{p['action'] or '-':6}  {p['status']}"
            )
        for t in h["taps"]:
            if "error" in t:
                lines.append(f"  tap {t['flow']}: bad tap_info: {t['error']}")
                continue
            lines.append(
                f"  tap {t['flow']}: {t['source']} -> {t['service']} in={t['mirror_in']} "
                f"out={t['mirror_out']} {t['action'] or '-'} {t['status']}"
            )
    return "\n".join(lines) if lines else "no SPP host in etcd"
