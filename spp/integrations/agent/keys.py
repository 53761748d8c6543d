"""networking-spp's etcd key schema and the values stored under it, parsed strictly.

Every key and literal here is byte-for-byte what networking-spp's mechanism driver, TaaS driver
and devstack scripts use, so the real driver works against this agent unchanged. Parsing raises
:class:`BadValue` naming the key and what is wrong: the agent logs it and skips the request
instead of dying on it as the original did.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

ROOT = "/spp/openstack/"
FREE = "None"  # the free marker of vhost and mirror keys: the literal string, not JSON null
PLUG, UNPLUG, UP = "plug", "unplug", "up"

_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


class BadValue(ValueError):
    """A value in etcd that the agent cannot act on."""


def configuration_key(host: str) -> str:
    return f"{ROOT}configuration/{host}"


def vhost_prefix(host: str, physnet: str | None = None) -> str:
    return f"{ROOT}vhost/{host}/" + (f"{physnet}/" if physnet is not None else "")


def vhost_key(host: str, physnet: str, vhost_id: int) -> str:
    return f"{vhost_prefix(host, physnet)}{vhost_id}"


def host_prefix(kind: str, host: str) -> str:
    """``/spp/openstack/<kind>/<host>/`` for kind in bind_port, action, port_status, mirror,
    tap_info, tap_action, tap_status, vhost, agent."""
    return f"{ROOT}{kind}/{host}/"


def key(kind: str, host: str, ident: str | int) -> str:
    return f"{host_prefix(kind, host)}{ident}"


def agent_key(host: str) -> str:
    """Liveness of the agent of ``host`` (not in networking-spp: its agent reported to Neutron
    over RPC). Held under a lease, so it vanishes when the agent is gone."""
    return f"{ROOT}agent/{host}"


#: every per-host prefix, for ``config destroy`` and the status view
HOST_KINDS = (
    "vhost",
    "bind_port",
    "action",
    "port_status",
    "mirror",
    "tap_info",
    "tap_action",
    "tap_status",
)


def normalize_mac(mac: object) -> str:
    """``aa:bb:cc:dd:ee:ff`` (Neutron's form) from any common spelling; BadValue otherwise."""
    if not isinstance(mac, str) or not _MAC.match(mac):
        raise BadValue(f"bad MAC address {mac!r}")
    return mac.replace("-", ":").lower()


def _int_field(data: dict[str, Any], name: str, low: int, high: int, optional: bool = False) -> int | None:
    value = data.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadValue(f"'{name}' must be an integer {low}..{high}, not {value!r}")
    return value


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as e:
        raise BadValue(f"{what} is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise BadValue(f"{what} is not a JSON object")
    return data


@dataclass(frozen=True)
class BindPort:
    """``bind_port/<host>/<port>``: ``{"mac_address": MAC, "vhost_id": N[, "vlan_id": VID]}``."""

    mac: str
    vhost_id: int
    vlan_id: int | None

    @classmethod
    def parse(cls, text: str) -> BindPort:
        data = _json_object(text, "bind_port")
        vhost_id = _int_field(data, "vhost_id", 0, 1 << 20)
        vlan = _int_field(data, "vlan_id", 1, 4094, optional=True)
        assert vhost_id is not None
        return cls(normalize_mac(data.get("mac_address")), vhost_id, vlan)

    def dumps(self) -> str:
        data: dict[str, Any] = {"mac_address": self.mac, "vhost_id": self.vhost_id}
        if self.vlan_id is not None:
            data["vlan_id"] = self.vlan_id
        return json.dumps(data)


@dataclass(frozen=True)
class TapInfo:
    """``tap_info/<host>/<tap_flow>``: service and source ports, mirror ids of each direction."""

    service_port: str
    source_port: str
    mirror_in: int | None
    mirror_out: int | None

    @classmethod
    def parse(cls, text: str) -> TapInfo:
        data = _json_object(text, "tap_info")
        ports = [data.get("service_port"), data.get("source_port")]
        if not all(isinstance(p, str) and p and "/" not in p for p in ports):
            raise BadValue(f"service_port and source_port must be port ids, not {ports!r}")
        m_in = _int_field(data, "mirror_in", 0, 1 << 20, optional=True)
        m_out = _int_field(data, "mirror_out", 0, 1 << 20, optional=True)
        if m_in is None and m_out is None:
            raise BadValue("tap_info has neither mirror_in nor mirror_out")
        if m_in is not None and m_in == m_out:
            raise BadValue(f"mirror_in and mirror_out are both {m_in}")
        return cls(str(ports[0]), str(ports[1]), m_in, m_out)

    def dumps(self) -> str:
        return json.dumps(
            {
                "service_port": self.service_port,
                "source_port": self.source_port,
                "mirror_in": self.mirror_in,
                "mirror_out": self.mirror_out,
            }
        )
