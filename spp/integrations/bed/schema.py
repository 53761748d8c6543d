"""What a bed file may say: the pydantic models of its sections, then the checks across sections
(a patch names a port its nfv has, a VM's NIC is some nfv's ``vhost:N``, ids are unique...).

Every problem is reported at once, each with its file, 1-based line and key path, before anything
is started. The file format is described in docs/USER_GUIDE.md ("A whole bed from one file").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from spp.engine.portid import PortId, PortUidError, parse_port_uid
from spp.instance import IFNAME_MAX, check_file_prefix
from spp.integrations.bed.yamlsafe import BedError, BedFileError, Document, KeyPath

SECONDARY_KINDS = ("nfv", "vf", "mirror", "pcap")
NFV_ADDABLE = ("ring", "vhost", "pcap", "nullpmd", "tap", "virtio_user")
COMPONENT_TYPES = {"vf": ("forward", "merge", "classifier"), "mirror": ("mirror",)}
RestartPolicy = Literal["no", "on-failure", "always"]
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
_IFNAME_RE = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{IFNAME_MAX - 1}}}")
_MAC_RE = re.compile(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}")
_LCORES_RE = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


def _lcores(value: Any) -> Any:
    """``0,1`` is a string in YAML but ``0`` a number: both mean an lcore list."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and not _LCORES_RE.fullmatch(value.replace(" ", "")):
        raise ValueError(f"'{value}' is not an lcore list like '0,1' or '1-3'")
    return value.replace(" ", "") if isinstance(value, str) else value


Lcores = Annotated[str, BeforeValidator(_lcores)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _name(value: Any) -> Any:
    if isinstance(value, str) and not _NAME_RE.fullmatch(value):
        raise ValueError(f"'{value}' is not a name: 1-32 letters, digits, '_', '.', '-'")
    return value


def _ifname(value: Any) -> Any:
    if isinstance(value, str) and not _IFNAME_RE.fullmatch(value):
        raise ValueError(f"'{value}' is not an interface name (1-{IFNAME_MAX} letters, digits, '_.-')")
    return value


def _port(value: Any) -> Any:
    if isinstance(value, str):
        try:
            parse_port_uid(value)
        except PortUidError as e:
            raise ValueError(str(e)) from None
        return str(parse_port_uid(value))
    return value


Name = Annotated[str, BeforeValidator(_name)]
IfName = Annotated[str, BeforeValidator(_ifname)]
PortName = Annotated[str, BeforeValidator(_port)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ctl(Strict):
    host: str = "127.0.0.1"
    api_port: Port = 7777
    pri_port: Port = 5555
    sec_port: Port = 6666

    @field_validator("host")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"'{v}' is not an IP address") from None
        return v


class Primary(Strict):
    lcores: Lcores = "0"
    rings: int = Field(default=8, ge=0, le=1024)
    ring_size: int = Field(default=1024, ge=2, le=1 << 20)
    interfaces: list[IfName] = []
    vhost_dir: str | None = None
    args: list[str] = []

    @field_validator("ring_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"{v} is not a power of two")
        return v


class Patch(Strict):
    src: PortName
    dst: PortName


def _patch(value: Any) -> Any:
    """``ring:0 -> phy:1`` or ``{src: ring:0, dst: phy:1}``."""
    if isinstance(value, str):
        src, sep, dst = value.partition("->")
        if not sep:
            raise ValueError(f"'{value}' is not a patch like 'ring:0 -> phy:1'")
        return {"src": src.strip(), "dst": dst.strip()}
    return value


class Component(Strict):
    name: Name
    type: str
    core: int = Field(ge=0, le=1023)
    rx: list[PortName] = []
    tx: list[PortName] = []


class TableEntry(Strict):
    mac: str
    port: PortName
    vlan: int | None = Field(default=None, ge=0, le=4095)

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str) -> str:
        if v != "default" and not _MAC_RE.fullmatch(v):
            raise ValueError(f"'{v}' is not a MAC address (or 'default')")
        return v.lower()


class Secondary(Strict):
    """One of ``nfv: ID``, ``vf: ID``, ``mirror: ID``, ``pcap: ID`` and the fields of that kind."""

    nfv: int | None = Field(default=None, ge=1, le=127)
    vf: int | None = Field(default=None, ge=1, le=127)
    mirror: int | None = Field(default=None, ge=1, le=127)
    pcap: int | None = Field(default=None, ge=1, le=127)
    lcores: Lcores = "0,1"
    restart: RestartPolicy | None = None
    vhost_client: bool = False
    args: list[str] = []
    # nfv
    ports: list[PortName] = []
    patches: list[Annotated[Patch, BeforeValidator(_patch)]] = []
    forward: bool = True
    # vf, mirror
    components: list[Component] = []
    classifier_table: list[TableEntry] = []
    # pcap
    port: PortName | None = None
    out_dir: str = "/tmp"
    capture: bool = False

    @property
    def kind(self) -> str:
        return next((k for k in SECONDARY_KINDS if getattr(self, k) is not None), "")

    @property
    def id(self) -> int:
        return int(getattr(self, self.kind) or 0)

    @property
    def name(self) -> str:
        return f"{self.kind} {self.id}"


class Namespace(Strict):
    name: Name
    outer: IfName
    inner: IfName = "eth0"
    address: str | None = None
    mac: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ipaddress.ip_interface(v)
            except ValueError:
                raise ValueError(f"'{v}' is not ADDR/PREFIX") from None
            if "/" not in v:
                raise ValueError(f"'{v}' needs a prefix length, e.g. {v}/24")
        return v

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is not None and not _MAC_RE.fullmatch(v):
            raise ValueError(f"'{v}' is not a MAC address")
        return v


class VmNic(Strict):
    port: PortName
    ip: str | None = None
    mac: str | None = None

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        return Namespace._address(v)  # type: ignore[arg-type]

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        return Namespace._mac(v)  # type: ignore[arg-type]


class Vm(Strict):
    id: int = Field(ge=0, le=99)
    name: Name | None = None
    nics: list[VmNic] = []
    mem: int = Field(default=256, ge=64)
    cores: int = Field(default=1, ge=1, le=64)
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    image: str | None = None
    hda: str | None = None
    restart: RestartPolicy | None = None


class Container(Strict):
    """An app in a container (sppc). ``app`` is one of sppc's launchers or ``generic``."""

    name: Name
    app: Literal[
        "spp-primary",
        "spp-nfv",
        "spp-vf",
        "spp-mirror",
        "spp-pcap",
        "spp-pktgen",
        "spp-l2fwd",
        "testpmd",
        "generic",
    ]
    dev_uids: list[PortName] = []
    lcores: Lcores = "1"
    image: str | None = None
    engine: Literal["podman", "docker"] | None = None
    args: list[str] = []
    restart: RestartPolicy | None = None


class Bed(Strict):
    name: Name = "bed"
    file_prefix: str = "spp"
    restart: RestartPolicy = "on-failure"
    ctl: Ctl = Ctl()
    primary: Primary
    namespaces: list[Namespace] = []
    secondaries: list[Secondary] = []
    vms: list[Vm] = []
    containers: list[Container] = []

    @field_validator("file_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return check_file_prefix(v)


# -- cross-section checks ----------------------------------------------------------------------


def _message(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    return msg.removeprefix("Value error, ")


def _pydantic_errors(doc: Document, exc: ValidationError) -> list[BedError]:
    out = []
    for err in exc.errors():
        path: KeyPath = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        out.append(doc.error(path, _message(err)))
    return out


class _Checker:
    def __init__(self, doc: Document, bed: Bed) -> None:
        self.doc, self.bed = doc, bed
        self.errors: list[BedError] = []
        #: containers without errors here, whose options sppc may check further (:mod:`.check`)
        self.checked_containers: set[int] = set()

    def fail(self, path: KeyPath, message: str) -> None:
        self.errors.append(self.doc.error(path, message))

    def port_ok(self, path: KeyPath, text: str, owned: set[str], what: str) -> None:
        uid = parse_port_uid(text)
        if uid.type == "phy":
            if uid.num >= len(self.bed.primary.interfaces):
                self.fail(path, f"{text}: the primary has {len(self.bed.primary.interfaces)} interface(s)")
            return
        if uid.type == "ring" and uid.num >= self.bed.primary.rings:
            self.fail(path, f"{text}: the primary has {self.bed.primary.rings} ring(s) (primary.rings)")
            return
        if text not in owned:
            self.fail(path, f"{text} is not among this {what}'s ports (add it to 'ports')")

    def run(self) -> list[BedError]:
        bed = self.bed
        ns_names: dict[str, int] = {}
        links: dict[str, KeyPath] = {}
        for i, ns in enumerate(bed.namespaces):
            if ns.name in ns_names:
                self.fail(("namespaces", i, "name"), f"namespace '{ns.name}' is named twice")
            ns_names[ns.name] = i
            if ns.outer in links:
                self.fail(("namespaces", i, "outer"), f"interface '{ns.outer}' is named twice")
            links[ns.outer] = ("namespaces", i, "outer")
        seen_ifaces: set[str] = set()
        for i, iface in enumerate(bed.primary.interfaces):
            if iface in seen_ifaces:
                self.fail(("primary", "interfaces", i), f"interface '{iface}' is listed twice")
            seen_ifaces.add(iface)

        ids: dict[int, int] = {}
        vhosts: dict[str, str] = {}
        for i, sec in enumerate(bed.secondaries):
            self.secondary(i, sec, ids, vhosts)

        vm_ids: set[int] = set()
        used_nics: dict[str, KeyPath] = {}
        for i, vm in enumerate(bed.vms):
            if vm.id in vm_ids:
                self.fail(("vms", i, "id"), f"VM id {vm.id} is used twice")
            vm_ids.add(vm.id)
            if vm.image is not None and vm.hda is not None:
                self.fail(("vms", i, "hda"), "give 'image' or 'hda', not both")
            for j, nic in enumerate(vm.nics):
                path = ("vms", i, "nics", j, "port")
                if not nic.port.startswith("vhost:"):
                    self.fail(path, f"{nic.port}: a VM's NIC is a vhost:N port")
                elif nic.port not in vhosts:
                    self.fail(path, f"{nic.port} is not a port of any nfv or vf (add it to an nfv's 'ports')")
                if nic.port in used_nics:
                    self.fail(path, f"{nic.port} is already a NIC of another VM or container")
                used_nics[nic.port] = path
        names: set[str] = set()
        for i, c in enumerate(bed.containers):
            if c.name in names:
                self.fail(("containers", i, "name"), f"container '{c.name}' is named twice")
            names.add(c.name)
            self.checked_containers.add(i)
            errors_before = len(self.errors)
            for j, uid in enumerate(c.dev_uids):
                path = ("containers", i, "dev_uids", j)
                if parse_port_uid(uid).type not in ("vhost", "tap", "memif"):
                    self.fail(path, f"{uid}: a container's device is vhost:N, memif:N or tap:N")
                elif uid.startswith("vhost:") and uid not in vhosts:
                    self.fail(path, f"{uid} is not a port of any nfv (add it to an nfv's 'ports')")
                if uid in used_nics:
                    self.fail(path, f"{uid} is already a NIC of another VM or container")
                used_nics[uid] = path
            if len(self.errors) > errors_before:
                self.checked_containers.discard(i)  # sppc would only repeat them, less precisely
        return self.errors

    def secondary(self, i: int, sec: Secondary, ids: dict[int, int], vhosts: dict[str, str]) -> None:
        given = [k for k in SECONDARY_KINDS if getattr(sec, k) is not None]
        if len(given) != 1:
            what = " and ".join(given) if given else "none"
            self.fail(
                ("secondaries", i), f"give exactly one of nfv:, vf:, mirror:, pcap: with its id ({what})"
            )
            return
        kind = given[0]
        base: KeyPath = ("secondaries", i)
        if sec.id in ids:
            self.fail((*base, kind), f"secondary id {sec.id} is used twice (ids are shared by all kinds)")
        ids[sec.id] = i
        fields = (
            set(self.doc.data["secondaries"][i])
            if isinstance(self.doc.data.get("secondaries"), list)
            else set()
        )
        own = {
            "nfv": {"ports", "patches", "forward"},
            "vf": {"components", "classifier_table"},
            "mirror": {"components"},
            "pcap": {"port", "out_dir", "capture"},
        }
        for other, keys in own.items():
            if other == kind:
                continue
            for key in sorted(keys & fields - own[kind]):
                self.fail((*base, key), f"'{key}' is not a field of {kind} (it belongs to {other})")
        if kind == "nfv":
            owned: set[str] = set()
            for j, port in enumerate(sec.ports):
                uid = parse_port_uid(port)
                if uid.type not in NFV_ADDABLE:
                    self.fail((*base, "ports", j), f"{port}: an nfv adds {', '.join(NFV_ADDABLE)} ports")
                elif port in owned:
                    self.fail((*base, "ports", j), f"{port} is listed twice")
                elif uid.type == "ring" and uid.num >= self.bed.primary.rings:
                    self.fail(
                        (*base, "ports", j), f"{port}: the primary has {self.bed.primary.rings} ring(s)"
                    )
                elif uid.type == "vhost":
                    if port in vhosts:
                        self.fail((*base, "ports", j), f"{port} is already a port of {vhosts[port]}")
                    vhosts[port] = sec.name
                owned.add(port)
            sources: set[str] = set()
            for j, patch in enumerate(sec.patches):
                self.port_ok((*base, "patches", j), patch.src, owned, "nfv")
                self.port_ok((*base, "patches", j), patch.dst, owned, "nfv")
                if patch.src in sources:
                    self.fail(
                        (*base, "patches", j), f"{patch.src} is patched twice (a port has one destination)"
                    )
                sources.add(patch.src)
        elif kind in ("vf", "mirror"):
            cores = [int(c) for part in sec.lcores.split(",") for c in _expand(part)]
            comp_names: set[str] = set()
            for j, comp in enumerate(sec.components):
                path = (*base, "components", j)
                if comp.type not in COMPONENT_TYPES[kind]:
                    self.fail(
                        (*path, "type"), f"'{comp.type}': a {kind} runs {', '.join(COMPONENT_TYPES[kind])}"
                    )
                if comp.name in comp_names:
                    self.fail((*path, "name"), f"component '{comp.name}' is named twice")
                comp_names.add(comp.name)
                if comp.core not in cores[1:]:
                    self.fail((*path, "core"), f"core {comp.core} is not a worker lcore of '{sec.lcores}'")
                for key in ("rx", "tx"):
                    for k, port in enumerate(getattr(comp, key)):
                        self.port_ok((*path, key, k), port, {port}, kind)
                        if port.startswith("vhost:"):
                            owner = vhosts.setdefault(port, sec.name)
                            if owner != sec.name:
                                self.fail((*path, key, k), f"{port} is already a port of {owner}")
            for j, entry in enumerate(sec.classifier_table):
                if kind != "vf":
                    break
                self.port_ok((*base, "classifier_table", j, "port"), entry.port, {entry.port}, kind)
        elif kind == "pcap":
            if sec.port is None:
                self.fail((*base, "port"), "a pcap needs the port it captures ('port: phy:0')")
            elif parse_port_uid(sec.port).type not in ("phy", "ring"):
                self.fail((*base, "port"), f"{sec.port}: a pcap captures a phy or ring port")
            else:
                self.port_ok((*base, "port"), sec.port, {sec.port}, "pcap")


def _expand(part: str) -> list[int]:
    lo, sep, hi = part.partition("-")
    return list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]


def validate(doc: Document, extra: Callable[[Document, Bed, set[int]], list[BedError]] | None = None) -> Bed:
    """The bed a loaded document describes, or :class:`BedFileError` listing every problem.
    ``extra`` checks more (sppc's options of the containers given, see :mod:`.check`)."""
    try:
        bed = Bed.model_validate(doc.data)
    except ValidationError as e:
        raise BedFileError(_pydantic_errors(doc, e)) from None
    checker = _Checker(doc, bed)
    errors = checker.run()
    if extra is not None:
        errors += extra(doc, bed, checker.checked_containers)
    if errors:
        raise BedFileError(errors)
    return bed


__all__ = ["Bed", "BedFileError", "PortId", "validate"]
