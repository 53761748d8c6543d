"""The compute host's layout from ``/spp/openstack/configuration/<host>``: which spp_vf serves
which physical network, its components (with the original agent's forward→merge change on
vhost-facing forwarders, so TaaS can add rings later), where each vhost's frames enter and
leave (§3.5 of the spec), and the spp_mirror components. Also devstack's generator of that
configuration from ``DPDK_PORT_MAPPINGS`` (``spp-agent config build``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from spp.integrations.agent.keys import BadValue

_PORT = re.compile(r"^(phy|ring|vhost):(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
COMPONENT_TYPES = ("forward", "merge", "classifier_mac")


@dataclass(frozen=True)
class Component:
    name: str
    core: int
    type: str  # forward, merge, classifier_mac (after the forward→merge change)
    rx: tuple[str, ...]
    tx: tuple[str, ...]


@dataclass(frozen=True)
class Vhost:
    """One vhost's wiring in its spp_vf; the TaaS fields are None with the "omitting forwarders"
    configuration (classifier and merger on the vhost itself), where TaaS cannot work."""

    vhost_id: int
    client_id: int
    physnet: str
    del_vlan_port: str  # where the classifier sends this vhost's frames (tags stripped here)
    del_vlan_comp: str
    add_vlan_port: str  # where the merger takes this vhost's frames (tags pushed here)
    add_vlan_comp: str
    in_comp: str | None = None  # the forwarder (a merge) into the vhost
    in_ring: str | None = None
    out_comp: str | None = None  # the forwarder out of the vhost
    out_ring: str | None = None


@dataclass(frozen=True)
class Mirror:
    mirror_id: int
    name: str
    core: int
    ring_a: str  # towards the service port
    ring_b: str  # towards the source port


@dataclass
class VfSpec:
    client_id: int
    physnet: str
    components: list[Component] = field(default_factory=list)


@dataclass
class Layout:
    vfs: list[VfSpec]
    vhosts: dict[int, Vhost]
    mirrors: list[Mirror]

    @property
    def mirror_client_id(self) -> int:
        return len(self.vfs) + 1

    def physnets(self) -> list[str]:
        return [vf.physnet for vf in self.vfs]


def _ports(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and _PORT.match(p) for p in value):
        raise BadValue(f"{what} must be a list of phy:N, ring:N or vhost:N, not {value!r}")
    return tuple(value)


def _component(raw: object, where: str) -> Component:
    if not isinstance(raw, dict):
        raise BadValue(f"{where} is not an object")
    name, core, kind = raw.get("name"), raw.get("core"), raw.get("type")
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadValue(f"{where}: bad name {name!r}")
    if isinstance(core, bool) or not isinstance(core, int) or not 0 <= core < 1024:
        raise BadValue(f"{where}: bad core {core!r}")
    if kind not in COMPONENT_TYPES:
        raise BadValue(f"{where}: type must be one of {', '.join(COMPONENT_TYPES)}, not {kind!r}")
    rx = _ports(raw.get("rx_port", []), f"{where} rx_port")
    tx = _ports(raw.get("tx_port", []), f"{where} tx_port")
    if kind == "forward" and any(p.startswith("vhost:") for p in tx):
        kind = "merge"  # so TaaS can give it a second rx ring, as the original agent did
    return Component(name, core, str(kind), rx, tx)


def parse_configuration(text: str) -> Layout:
    """The layout from the configuration JSON; :class:`BadValue` says what is wrong."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as e:
        raise BadValue(f"configuration is not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("vf"), list) or not data["vf"]:
        raise BadValue("configuration needs a non-empty 'vf' list")
    vfs: list[VfSpec] = []
    vhosts: dict[int, Vhost] = {}
    for i, raw in enumerate(data["vf"]):
        where = f"vf[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("physical_network"), str):
            raise BadValue(f"{where} needs a physical_network")
        comps = raw.get("components")
        if not isinstance(comps, list) or not comps:
            raise BadValue(f"{where} needs a components list")
        spec = VfSpec(i + 1, raw["physical_network"])
        spec.components = [_component(c, f"{where}.components[{j}]") for j, c in enumerate(comps)]
        names = [c.name for c in spec.components]
        if len(set(names)) != len(names):
            raise BadValue(f"{where}: component names repeat")
        vfs.append(spec)
        for vh in _vhost_wiring(spec, where):
            if vh.vhost_id in vhosts:
                raise BadValue(f"vhost:{vh.vhost_id} appears in two spp_vf configurations")
            vhosts[vh.vhost_id] = vh
    if len({vf.physnet for vf in vfs}) != len(vfs):
        raise BadValue("a physical_network appears twice in 'vf'")
    mirrors = []
    for i, raw in enumerate(data.get("mirror") or []):
        where = f"mirror[{i}]"
        if not isinstance(raw, dict):
            raise BadValue(f"{where} is not an object")
        core = raw.get("core")
        if isinstance(core, bool) or not isinstance(core, int) or not 0 <= core < 1024:
            raise BadValue(f"{where}: bad core {core!r}")
        ports = _ports(raw.get("ports"), f"{where} ports")
        if len(ports) != 2 or not all(p.startswith("ring:") for p in ports):
            raise BadValue(f"{where}: ports must be two rings")
        mirrors.append(Mirror(i, f"mirror_{i}", core, ports[0], ports[1]))
    return Layout(vfs, vhosts, mirrors)


def _vhost_wiring(spec: VfSpec, where: str) -> list[Vhost]:
    """§3.5: for each vhost, the components around it and the rings between them."""

    def sending_to(port: str) -> Component | None:
        return next((c for c in spec.components if port in c.tx), None)

    def receiving_from(port: str) -> Component | None:
        return next((c for c in spec.components if port in c.rx), None)

    out = []
    for comp in spec.components:
        for port in comp.tx:
            if not port.startswith("vhost:"):
                continue
            vid = int(port.split(":")[1])
            rx_comp = receiving_from(port)
            if rx_comp is None:
                raise BadValue(f"{where}: nothing receives from {port}")
            fields: dict[str, Any] = {}
            if comp.type == "merge":
                if not comp.rx:
                    raise BadValue(f"{where}: {comp.name} has no rx port")
                ring = comp.rx[0]
                cls = sending_to(ring)
                if cls is None:
                    raise BadValue(f"{where}: nothing sends to {ring}")
                fields.update(del_vlan_port=ring, del_vlan_comp=cls.name, in_comp=comp.name, in_ring=ring)
            else:
                fields.update(del_vlan_port=port, del_vlan_comp=comp.name)
            if rx_comp.type == "forward":
                if not rx_comp.tx:
                    raise BadValue(f"{where}: {rx_comp.name} has no tx port")
                ring = rx_comp.tx[0]
                merger = receiving_from(ring)
                if merger is None:
                    raise BadValue(f"{where}: nothing receives from {ring}")
                fields.update(
                    add_vlan_port=ring, add_vlan_comp=merger.name, out_comp=rx_comp.name, out_ring=ring
                )
            else:
                fields.update(add_vlan_port=port, add_vlan_comp=rx_comp.name)
            out.append(Vhost(vhost_id=vid, client_id=spec.client_id, physnet=spec.physnet, **fields))
    return out


# -- devstack's generator (spp-config-build.py) ------------------------------------------------


@dataclass(frozen=True)
class NicMapping:
    pci: str
    physnet: str
    num_vhost: int
    core_mask: str


def parse_mappings(text: str) -> list[NicMapping]:
    """``DPDK_PORT_MAPPINGS``: ``<PCI>#<physnet>#<num_vhost>#<core_mask>`` comma-separated."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split("#")
        if len(parts) != 4:
            raise BadValue(f"mapping {item!r} is not PCI#physical_network#num_vhost#core_mask")
        pci, physnet, num, mask = parts
        if not physnet or "/" in physnet:
            raise BadValue(f"mapping {item!r}: bad physical network {physnet!r}")
        if not num.isdigit() or int(num) < 1:
            raise BadValue(f"mapping {item!r}: num_vhost must be a positive integer")
        cores_of(mask, item)
        out.append(NicMapping(pci, physnet, int(num), mask))
    if not out:
        raise BadValue("no mappings given")
    return out


def cores_of(mask: str, what: str) -> list[int]:
    """The cores of a mask, lowest first, without the lowest (the DPDK master core)."""
    try:
        value = int(mask, 16)
    except ValueError:
        raise BadValue(f"{what}: core mask {mask!r} is not hexadecimal") from None
    cores = [b for b in range(value.bit_length()) if value >> b & 1]
    if len(cores) < 2:
        raise BadValue(f"{what}: core mask {mask!r} needs a master core and at least one more")
    return cores[1:]


def build_configuration(
    mappings: list[NicMapping], mirror: str | None = None, component_conf: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The default configuration: per vhost a forwarder each way, per NIC a classifier and a
    merger, one core each; mirrors on rings after the vhosts' (``mirror``: ``<num>#<core_mask>``).
    ``component_conf`` (devstack's ``SPP_COMPONENT_CONF`` YAML: ``vf: [{components: [...]}]``,
    ``mirror: [...]``) replaces the generated components of a NIC, or the mirrors, where given."""
    given = component_conf or {}
    given_vfs = given.get("vf") or []
    if not isinstance(given_vfs, list):
        raise BadValue("component configuration: 'vf' must be a list")
    vfs, first = [], 0
    for sec, nic in enumerate(mappings):
        own = given_vfs[sec] if sec < len(given_vfs) and isinstance(given_vfs[sec], dict) else {}
        if own.get("components"):
            vfs.append(
                {
                    "physical_network": nic.physnet,
                    "pci_address": nic.pci,
                    "num_vhost": nic.num_vhost,
                    "core_mask": nic.core_mask,
                    "components": own["components"],
                }
            )
            first += nic.num_vhost
            continue
        cores = cores_of(nic.core_mask, nic.pci)
        need = 2 * nic.num_vhost + 2
        if len(cores) < need:
            raise BadValue(f"{nic.pci}: core mask {nic.core_mask} has {len(cores)} cores, {need} needed")
        take = iter(cores)
        comps: list[dict[str, Any]] = []
        ids = range(first, first + nic.num_vhost)
        for v in ids:
            comps.append(
                {
                    "core": next(take),
                    "type": "forward",
                    "name": f"forward_{v}_tx",
                    "rx_port": [f"ring:{2 * v}"],
                    "tx_port": [f"vhost:{v}"],
                }
            )
            comps.append(
                {
                    "core": next(take),
                    "type": "forward",
                    "name": f"forward_{v}_rx",
                    "rx_port": [f"vhost:{v}"],
                    "tx_port": [f"ring:{2 * v + 1}"],
                }
            )
        comps.append(
            {
                "core": next(take),
                "type": "classifier_mac",
                "name": "classifier",
                "rx_port": [f"phy:{sec}"],
                "tx_port": [f"ring:{2 * v}" for v in ids],
            }
        )
        comps.append(
            {
                "core": next(take),
                "type": "merge",
                "name": "merger",
                "rx_port": [f"ring:{2 * v + 1}" for v in ids],
                "tx_port": [f"phy:{sec}"],
            }
        )
        vfs.append(
            {
                "physical_network": nic.physnet,
                "pci_address": nic.pci,
                "num_vhost": nic.num_vhost,
                "core_mask": nic.core_mask,
                "components": comps,
            }
        )
        first += nic.num_vhost
    config: dict[str, Any] = {"vf": vfs}
    if given.get("mirror"):
        config["mirror"] = given["mirror"]
    elif mirror:
        num, _, mask = mirror.partition("#")
        if not num.isdigit() or int(num) < 1 or not mask:
            raise BadValue(f"mirror {mirror!r} is not <num>#<core_mask>")
        cores = cores_of(mask, "mirror")
        if len(cores) < int(num):
            raise BadValue(f"mirror core mask {mask} has {len(cores)} cores, {num} needed")
        ring = 2 * first
        config["mirror"] = []
        for i in range(int(num)):
            config["mirror"].append({"core": cores[i], "ports": [f"ring:{ring}", f"ring:{ring + 1}"]})
            ring += 2
    return config
