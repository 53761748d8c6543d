"""The running panel as a graph, built from the REST API's own replies.

A :class:`Snapshot` holds what ``GET /v1/processes``, ``/v1/primary/status`` and each secondary's
``GET`` answered, in the API's shapes, so the CLI (over HTTP) and spp-ctl (from its process table)
build the same :class:`Graph` and every picture of it agrees: terminal text, DOT, SVG, Mermaid and
the web page.

Nodes are processes, ports (phy, ring, vhost with its socket, tap, ...), vf/mirror components,
spp_pcap captures and the virtio front-end attached to a vhost socket when one is connected: the
VM, container or application the back-end identified (``peer`` in the port's status), else anonymous.
Edges are patches (nfv, the primary's forwarder), component wiring (port -> component -> port),
captures and virtio links. Each edge names the process that moves its packets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COUNTER_KEYS",
    "Edge",
    "Graph",
    "Node",
    "ProcInfo",
    "Snapshot",
    "build_graph",
    "port_counters",
    "port_node_id",
    "process_name",
]

#: Port type order (SPP's topo order), then anything else by name.
PORT_ORDER = ("phy", "ring", "vhost", "virtio_user", "tap", "pcap", "nullpmd", "memif", "pipe")
COUNTER_KEYS = ("rx", "tx", "rx_drop", "tx_drop", "rx_bytes", "tx_bytes")
SEC_TYPES = ("nfv", "vf", "mirror", "pcap")


def process_name(kind: str, client_id: int | None) -> str:
    """``primary``, ``nfv:1``: the name processes have in edge labels, metrics and the page."""
    return kind if client_id is None or kind == "primary" else f"{kind}:{client_id}"


def port_node_id(port: str) -> str:
    """A node id safe in DOT, Mermaid, SVG ids and CSS selectors: ``phy:0 nq 1`` -> ``port-phy-0nq1``."""
    return "port-" + re.sub(r"[^A-Za-z0-9_]+", "-", port.replace(" nq ", "nq"))


def _safe_id(prefix: str, *parts: object) -> str:
    return prefix + "-" + "-".join(re.sub(r"[^A-Za-z0-9_]+", "_", str(p)) for p in parts)


def _port_key(port: str) -> tuple[int, int, str]:
    kind = port.split(":", 1)[0]
    m = re.match(r"[^:]*:(\d+)", port)
    rank = PORT_ORDER.index(kind) if kind in PORT_ORDER else len(PORT_ORDER)
    return rank, int(m.group(1)) if m else 0, port


@dataclass
class Snapshot:
    """REST replies: ``processes`` as ``GET /v1/processes``; ``statuses`` by process name."""

    processes: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)

    def status(self, name: str) -> dict[str, Any]:
        return self.statuses.get(name) or {}


@dataclass
class Node:
    id: str
    kind: str  # process, port, component, capture, frontend
    label: str
    #: second line of text: a vhost socket, a component type, a process state
    detail: str = ""
    #: the port type (phy, ring, ...) or process type, for colours
    group: str = ""
    #: the process a component or capture belongs to
    owner: str = ""


@dataclass
class Edge:
    src: str
    dst: str
    label: str
    process: str
    kind: str = "patch"  # patch, component, capture, virtio
    running: bool = True


@dataclass
class ProcInfo:
    """What the page's controls need about one process."""

    name: str
    type: str
    client_id: int | None
    state: str  # running, idling, idle, not responding, ""
    ports: list[str] = field(default_factory=list)
    patches: list[dict[str, str]] = field(default_factory=list)
    #: whether the page offers patch/forward controls (nfv, primary with a forwarder)
    patchable: bool = False


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    procs: list[ProcInfo] = field(default_factory=list)

    def add(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    def port(self, port: str) -> str:
        return self.add(Node(port_node_id(port), "port", port, group=port.split(":", 1)[0]))

    def signature(self) -> tuple[Any, ...]:
        """Changes whenever anything drawn changes (not with the counters)."""
        return (
            tuple((n.id, n.label, n.detail) for n in self.nodes.values()),
            tuple((e.src, e.dst, e.label, e.kind, e.running) for e in self.edges),
            tuple(
                (p.name, p.state, tuple(p.ports), tuple(map(tuple, map(dict.items, p.patches))))
                for p in self.procs
            ),
        )

    def ports(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "port"]


def _sorted_processes(processes: list[dict[str, Any]]) -> list[tuple[str, int | None, dict[str, Any]]]:
    order = ("primary", *SEC_TYPES)
    out = []
    for p in processes:
        kind = str(p.get("type", ""))
        cid = p.get("client-id")
        out.append((kind, cid if isinstance(cid, int) else None, p))
    out.sort(key=lambda t: (order.index(t[0]) if t[0] in order else 99, t[1] or 0))
    return out


def build_graph(snap: Snapshot) -> Graph:
    """Every process, port and link the snapshot shows, in a stable order."""
    g = Graph()
    vhost_info: dict[str, dict[str, Any]] = {}
    for kind, cid, entry in _sorted_processes(snap.processes):
        name = process_name(kind, cid)
        st = snap.status(name)
        responding = entry.get("status") != "not responding"
        if kind == "primary":
            fwd = st.get("forwarder")
            state = str(fwd.get("status", "")) if isinstance(fwd, dict) else ""
            info = ProcInfo(name, kind, None, state if responding else "not responding")
            g.add(Node(_safe_id("proc", name), "process", name, info.state, group=kind))
            if isinstance(fwd, dict):
                info.patchable = True
                info.ports = [str(p) for p in fwd.get("ports") or []]
                info.patches = [_patch(p) for p in fwd.get("patches") or [] if isinstance(p, dict)]
                for port in info.ports:
                    g.port(port)
                for p in info.patches:
                    g.edges.append(
                        Edge(g.port(p["src"]), g.port(p["dst"]), name, name, running=state == "running")
                    )
            for p in st.get("phy_ports") or []:
                g.port(f"phy:{p.get('id')}")
            g.procs.append(info)
            continue
        state = str(st.get("status", "")) if kind in ("nfv", "pcap") else ""
        info = ProcInfo(name, kind, cid, state if responding else "not responding")
        g.add(Node(_safe_id("proc", name), "process", name, info.state, group=kind))
        if kind == "nfv":
            info.patchable = True
            info.ports = [str(p) for p in st.get("ports") or []]
            info.patches = [_patch(p) for p in st.get("patches") or [] if isinstance(p, dict)]
            for port in info.ports:
                g.port(port)
            for p in info.patches:
                g.edges.append(
                    Edge(g.port(p["src"]), g.port(p["dst"]), name, name, running=state == "running")
                )
        elif kind in ("vf", "mirror"):
            info.ports = [str(p) for p in st.get("ports") or []]
            for port in info.ports:
                g.port(port)
            _components(g, name, st)
        if kind in ("nfv", "vf", "mirror"):
            for s in st.get("stats") or []:
                if isinstance(s, dict) and "socket" in s:
                    vhost_info[str(s.get("port"))] = s
        elif kind == "pcap":
            _capture(g, name, state, st)
        g.procs.append(info)
    for port, s in vhost_info.items():
        node = g.nodes.get(port_node_id(port))
        if node is None:
            continue
        node.detail = str(s.get("socket", ""))
        if s.get("connected"):
            fe = g.add(_frontend(port, node.detail, s.get("peer")))
            g.edges.append(Edge(node.id, fe, "virtio", "", "virtio", bool(s.get("running", True))))
    # Processes and components in the order they came, ports by type and number.
    order = {node_id: n for n, node_id in enumerate(g.nodes)}
    ordered = sorted(g.nodes.values(), key=lambda n: _node_key(n, order[n.id]))
    g.nodes = {n.id: n for n in ordered}
    return g


#: label words of a vhost peer's kind (``peer.kind`` in a vhost port's status)
PEER_KINDS = {"vm": "VM", "container": "container", "app": "app"}


def _frontend(port: str, socket_path: str, peer: Any) -> Node:
    """The virtio front-end of a connected vhost socket: the VM, container or application the
    back-end saw connect (one node per process, whatever number of sockets it holds), or an
    anonymous front-end when the process is not known."""
    if isinstance(peer, dict) and isinstance(peer.get("pid"), int) and peer.get("kind") in PEER_KINDS:
        kind = str(peer["kind"])
        name = str(peer.get("name") or peer["pid"])
        return Node(_safe_id("peer", str(peer["pid"])), "frontend", f"{PEER_KINDS[kind]} {name}",
                    f"pid {peer['pid']}", kind)  # fmt: skip
    return Node(_safe_id("frontend", port), "frontend", "virtio front-end", socket_path, "vm")


def _node_key(n: Node, seen: int) -> tuple[int, tuple[int, int, str]]:
    rank = {"process": 0, "port": 1, "component": 2, "capture": 3, "frontend": 4}.get(n.kind, 5)
    return rank, _port_key(n.label) if n.kind == "port" else (seen, 0, "")


def _patch(p: dict[str, Any]) -> dict[str, str]:
    return {"src": str(p.get("src", "")), "dst": str(p.get("dst", ""))}


def _components(g: Graph, name: str, st: dict[str, Any]) -> None:
    for comp in st.get("components") or []:
        if not isinstance(comp, dict) or "name" not in comp:
            continue
        ctype = str(comp.get("type", ""))
        cid = g.add(
            Node(
                _safe_id("comp", name, comp["name"]), "component", str(comp["name"]), ctype, ctype, owner=name
            )
        )
        for p in comp.get("rx_port") or []:
            if isinstance(p, dict) and p.get("port"):
                g.edges.append(Edge(g.port(str(p["port"])), cid, name, name, "component"))
        for p in comp.get("tx_port") or []:
            if isinstance(p, dict) and p.get("port"):
                g.edges.append(Edge(cid, g.port(str(p["port"])), name, name, "component"))


def _capture(g: Graph, name: str, state: str, st: dict[str, Any]) -> None:
    files = [c.get("filename") for c in st.get("core") or [] if isinstance(c, dict) and c.get("filename")]
    detail = str(files[0]) if files else state
    cap = g.add(Node(_safe_id("capture", name), "capture", f"{name} capture", detail, "pcap", owner=name))
    for core in st.get("core") or []:
        if isinstance(core, dict) and core.get("role") == "receive":
            for p in core.get("rx_port") or []:
                if isinstance(p, dict) and p.get("port"):
                    g.edges.append(
                        Edge(g.port(str(p["port"])), cap, name, name, "capture", state == "running")
                    )


def port_counters(snap: Snapshot) -> dict[str, dict[str, int]]:
    """Counters per drawn node: port totals over every process (the primary's sums for phy and
    ring, the ``stats`` of nfv, vf and mirror for other port types), vf/mirror components' own counters and
    spp_pcap's receive counters."""
    out: dict[str, dict[str, int]] = {}

    def add(node: str, entry: dict[str, Any], keys: tuple[str, ...] = COUNTER_KEYS) -> None:
        acc = out.setdefault(node, dict.fromkeys(COUNTER_KEYS, 0))
        for k in keys:
            v = entry.get(k)
            if isinstance(v, int):
                acc[k] = acc.get(k, 0) + v

    primary = snap.status("primary")
    for kind, key in (("phy", "phy_ports"), ("ring", "ring_ports")):
        for p in primary.get(key) or []:
            if isinstance(p, dict):
                add(port_node_id(f"{kind}:{p.get('id')}"), p)
    has_primary = bool(primary)
    for kind, cid, _entry in _sorted_processes(snap.processes):
        name = process_name(kind, cid)
        st = snap.status(name)
        if kind in ("nfv", "vf", "mirror"):
            for s in st.get("stats") or []:
                if not isinstance(s, dict) or "port" not in s:
                    continue
                port = str(s["port"])
                if has_primary and port.split(":", 1)[0] in ("phy", "ring"):
                    continue  # already in the primary's totals
                add(port_node_id(port), s)
        if kind in ("vf", "mirror"):
            for comp in st.get("components") or []:
                c = comp.get("counters") if isinstance(comp, dict) else None
                if isinstance(c, dict) and "name" in comp:
                    entry = {"rx": c.get("rx"), "tx": c.get("tx"), "tx_drop": c.get("tx_drop"),
                             "rx_drop": c.get("drop")}  # fmt: skip
                    add(_safe_id("comp", name, comp["name"]), entry)
        elif kind == "pcap":
            for core in st.get("core") or []:
                if isinstance(core, dict) and core.get("role") == "receive":
                    add(
                        _safe_id("capture", name),
                        {"rx": core.get("received"), "rx_drop": core.get("dropped")},
                    )
    return out
