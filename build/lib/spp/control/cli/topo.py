"""``topo``: the network topology as terminal text, DOT, images (graphviz), JSON or YAML (§7.5).

SPP's ``topo term`` needed graphviz, ImageMagick and a sixel terminal. Here ``topo term`` draws
ports and patches per process as plain text, so it works over any ssh session; ``topo dot`` prints
SPP's DOT and ``topo FILE.png|svg|...`` calls graphviz's ``dot`` (argument list, no shell).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .client import CtlError, SppCtlClient
from .common import SEC_TYPES, CliError

__all__ = ["Edge", "ProcView", "Topology", "node_id", "run_topo"]

#: Node order in DOT output and colour lookup; ``spppcap`` is spp_pcap's pseudo port.
NODE_TYPES = ["phy", "ring", "vhost", "pcap", "nullpmd", "tap", "memif", "pipe", "spppcap"]
PCAP_NODE = "spppcap"
PCAP_COLOR = "gold2"
FALLBACK_PORT_COLOR = "lightgrey"
LINE_STYLE = {True: "solid", False: "dashed"}

IMAGE_TYPES = {"png", "jpg", "jpeg", "gif", "bmp", "svg", "pdf"}
TEXT_TYPES = {"dot", "json", "js", "yaml", "yml"}


def node_id(port: str) -> str:
    """``phy:0`` -> ``phy_0``; ``phy:0 nq 1`` -> ``phy_0nq1`` (DOT ids cannot hold spaces)."""
    return port.replace(" nq ", "nq").replace(":", "_")


def _ptype(port: str) -> str:
    return port.split(":", 1)[0]


def _port_key(port: str) -> tuple[int, int, str]:
    """Sort ports by type (NODE_TYPES order) then by number."""
    t = _ptype(port)
    m = re.match(r"[^:]*:(\d+)", port)
    return (NODE_TYPES.index(t) if t in NODE_TYPES else len(NODE_TYPES), int(m.group(1)) if m else 0, port)


@dataclass
class Edge:
    src: str
    dst: str
    #: Edge label in DOT (``nfv:1``, ``vf:2:f``, ``pcap:4``).
    label: str
    #: Component name for vf/mirror (shown by ``topo term``).
    comp: str = ""
    comp_type: str = ""


@dataclass
class ProcView:
    """One process as the topology sees it: its ports and the directed links between them."""

    kind: str
    sec_id: int | None
    running: bool
    state: str
    ports: list[str] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    idle_cores: list[Any] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.kind if self.sec_id is None else f"{self.kind}:{self.sec_id}"


def _nfv_view(sid: int, st: dict[str, Any]) -> ProcView:
    running = st.get("status") == "running"
    v = ProcView("nfv", sid, running, str(st.get("status", "")), list(st.get("ports") or []), raw=st)
    for p in st.get("patches") or []:
        v.edges.append(Edge(p["src"], p["dst"], f"nfv:{sid}"))
    return v


def _worker_view(kind: str, sid: int, st: dict[str, Any]) -> ProcView:
    v = ProcView(kind, sid, True, "", list(st.get("ports") or []), raw=st)
    for comp in st.get("components") or []:
        if "name" not in comp:
            v.idle_cores.append(comp.get("core"))
            continue
        ctype = str(comp.get("type", ""))
        rx = [p.get("port") for p in comp.get("rx_port") or [] if p.get("port")]
        tx = [p.get("port") for p in comp.get("tx_port") or [] if p.get("port")]
        # SPP labels mirror edges "vf:<id>" (spec §7.5); kept for DOT compatibility.
        label = f"vf:{sid}:{ctype[:1]}" if kind == "vf" else f"vf:{sid}"
        if ctype == "merge":
            pairs = [(r, tx[0]) for r in rx] if tx else []
        else:  # forward: 1 rx -> 1 tx; classifier and mirror: 1 rx -> n tx
            pairs = [(rx[0], t) for t in (tx if ctype != "forward" else tx[:1])] if rx else []
        for s, d in pairs:
            v.edges.append(Edge(s, d, label, comp["name"], ctype))
        if not pairs:
            v.edges.append(Edge("", "", label, comp["name"], ctype))  # incomplete component, for term
    return v


def _pcap_view(sid: int, st: dict[str, Any]) -> ProcView:
    running = st.get("status") == "running"
    v = ProcView("pcap", sid, running, str(st.get("status", "")), raw=st)
    for c in st.get("core") or []:
        if c.get("role") == "receive":
            for p in (c.get("rx_port") or [])[:1]:
                v.ports.append(p["port"])
                v.edges.append(Edge(p["port"], f"{PCAP_NODE}:{sid}", f"pcap:{sid}"))
    v.ports.append(f"{PCAP_NODE}:{sid}")
    return v


def _primary_view(st: dict[str, Any]) -> ProcView | None:
    fwd = st.get("forwarder")
    if not isinstance(fwd, dict):
        return None
    running = fwd.get("status") == "running"
    v = ProcView("primary", None, running, str(fwd.get("status", "")), list(fwd.get("ports") or []), raw=st)
    for p in fwd.get("patches") or []:
        v.edges.append(Edge(p["src"], p["dst"], "primary"))
    return v


class Topology:
    """Snapshot of every secondary's status (and the primary's forwarder, for ``topo term``)."""

    def __init__(
        self, procs: list[ProcView], primary: ProcView | None = None, warnings: list[str] | None = None
    ):
        self.procs = procs
        self.primary = primary
        self.warnings = warnings or []

    @classmethod
    def collect(cls, client: SppCtlClient, with_primary: bool = False) -> Topology:
        procs: list[ProcView] = []
        warnings: list[str] = []
        running = client.processes()
        for kind in SEC_TYPES:
            for p in running:
                sid = p.get("client-id")
                if p.get("type") != kind or not isinstance(sid, int):
                    continue
                try:
                    st = client.get(f"{kind}s/{sid}")
                except CtlError as e:
                    if e.status is None:
                        raise
                    warnings.append(f"Warning: cannot get status of {kind}:{sid}: {e.message}")
                    continue
                if not isinstance(st, dict):
                    continue
                if kind == "nfv":
                    procs.append(_nfv_view(sid, st))
                elif kind == "pcap":
                    procs.append(_pcap_view(sid, st))
                else:
                    procs.append(_worker_view(kind, sid, st))
        primary = None
        if with_primary and any(p.get("type") == "primary" for p in running):
            try:
                pst = client.get("primary/status")
            except CtlError as e:
                if e.status is None:
                    raise
                pst = None
            if isinstance(pst, dict):
                primary = _primary_view(pst)
        return cls(procs, primary, warnings)

    def has_ports(self) -> bool:
        return any(p.ports or any(e.src for e in p.edges) for p in self.procs)

    # -- DOT -----------------------------------------------------------------------------------

    def dot(self, config: Any, subgraphs: dict[str, str] | None = None) -> str:
        """SPP's DOT (spec §7.5), with a stable node order instead of Python set order."""
        sec_colors = list(config["topo_sec_colors"]) or ["black"]
        port_colors = dict(config["topo_port_colors"])
        port_colors.setdefault(PCAP_NODE, PCAP_COLOR)
        ports: set[str] = set()
        for p in self.procs:
            ports.update(p.ports)
            ports.update(x for e in p.edges for x in (e.src, e.dst) if x)
        by_type: dict[str, list[str]] = {}
        for port in sorted(ports, key=_port_key):
            by_type.setdefault(_ptype(port), []).append(port)
        order = [t for t in NODE_TYPES if t in by_type] + sorted(t for t in by_type if t not in NODE_TYPES)

        out = ["digraph spp{", "newrank=true;", 'node[shape="rectangle", style="filled"];']
        for t in order:
            color = port_colors.get(t, FALLBACK_PORT_COLOR)
            for port in by_type[t]:
                out.append(f'{node_id(port)}[label="{port}", fillcolor="{color}"];')
        for t in order:
            out.append(f"{{rank=same; {'; '.join(node_id(p) for p in by_type[t])}}}")
        bottom = by_type.get("phy") or by_type.get("vhost")
        if bottom:
            out.append(f"{{rank=max; {node_id(bottom[0])}}}")
        host = "; ".join(node_id(p) for t in order for p in by_type[t])
        inner = [f'label="Host" {host}']
        for i, (label, members) in enumerate((subgraphs or {}).items(), 1):
            ids = ";".join(node_id(m) for m in members.split(";") if m)
            inner.append(f'subgraph cluster{i} {{label="{label}" {ids}}}')
        out.append(f"subgraph cluster0 {{{'; '.join(inner)}}}")
        for p in self.procs:
            color = sec_colors[(p.sec_id or 0) % len(sec_colors)]
            style = LINE_STYLE[p.running]
            for e in p.edges:
                if e.src and e.dst:
                    attrs = f'label="{e.label}", color="{color}", style="{style}"'
                    out.append(f"{node_id(e.src)} -> {node_id(e.dst)}[{attrs}];")
        out.append("}")
        return "\n".join(out) + "\n"

    # -- terminal ------------------------------------------------------------------------------

    def term(self) -> list[str]:
        """Plain-text drawing: one block per process, patch chains left to right."""
        lines: list[str] = []
        blocks = ([self.primary] if self.primary else []) + self.procs
        for v in blocks:
            if lines:
                lines.append("")
            head = v.name if v.kind != "primary" else "primary (forwarder)"
            if v.state:
                head += f" [{v.state}]"
            lines.append(head)
            if v.kind in ("nfv", "primary"):
                lines += _chains(v)
            elif v.kind == "pcap":
                lines += _pcap_lines(v)
            else:
                lines += _component_lines(v)
        links = self._shared_links()
        if links:
            lines += ["", "links between processes:", *links]
        return lines

    def _shared_links(self) -> list[str]:
        """Ports through which one process feeds another (a ring written by A, read by B)."""
        writers: dict[str, list[str]] = {}
        readers: dict[str, list[str]] = {}
        blocks = ([self.primary] if self.primary else []) + self.procs
        for v in blocks:
            for e in v.edges:
                if e.src and e.dst:
                    if v.name not in writers.setdefault(e.dst, []):
                        writers[e.dst].append(v.name)
                    if v.name not in readers.setdefault(e.src, []):
                        readers[e.src].append(v.name)
        lines = []
        for port in sorted(set(writers) | set(readers), key=_port_key):
            w, r = writers.get(port, []), readers.get(port, [])
            if port.startswith(PCAP_NODE + ":") or len(set(w) | set(r)) < 2:
                continue
            if w and r:
                lines.append(f"  {', '.join(w)} --> {port} --> {', '.join(r)}")
            elif r:
                lines.append(f"  {port} read by {', '.join(r)}")
            else:
                lines.append(f"  {port} written by {', '.join(w)}")
        return lines

    # -- data dumps ----------------------------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {t: [] for t in SEC_TYPES}
        for v in self.procs:
            data[v.kind].append(v.raw)
        return data


ARROW = "-->"


def _box(label: str, width: int) -> tuple[str, str, str]:
    """Three lines of an ASCII box around ``label``, ``width`` characters inside."""
    edge = "+" + "-" * (width + 2) + "+"
    return edge, f"| {label:<{width}} |", edge


def draw_chain(nodes: list[str], indent: str = "  ") -> list[str]:
    """``[a, b, c]`` as boxes joined by arrows on one row (a patch chain)."""
    boxes = [_box(n, len(n)) for n in nodes]
    gap_mid, gap = f"{ARROW}", " " * len(ARROW)
    rows = []
    for i in range(3):
        sep = gap_mid if i == 1 else gap
        rows.append(indent + sep.join(b[i] for b in boxes))
    return rows


def draw_fan(left: list[str], right: list[str], indent: str = "  ") -> list[str]:
    """One port to several (classifier, mirror) or several to one (merge), with a branch line."""
    if len(left) <= 1 and len(right) <= 1:
        return draw_chain(left[:1] + right[:1], indent)
    lw = max(len(x) for x in left)
    rw = max(len(x) for x in right)
    lbox = [_box(x, lw) for x in left]
    rbox = [_box(x, rw) for x in right]
    blank_l = " " * (lw + 4)
    rows: list[str] = []
    if len(left) == 1:  # fan-out: the branch runs down the connector column
        n = len(rbox)
        for i, rb in enumerate(rbox):
            more = i < n - 1
            lb = lbox[0] if i == 0 else (blank_l, blank_l, blank_l)
            mid = "--+" + ARROW if i == 0 else "  +" + ARROW
            top = " " * 6 if i == 0 else "  |   "
            bot = "  |   " if more else " " * 6
            rows += [indent + lb[0] + top + rb[0], indent + lb[1] + mid + rb[1], indent + lb[2] + bot + rb[2]]
        return [r.rstrip() for r in rows]
    # fan-in: every source joins the connector column, which leads to the single target on row 0
    n = len(lbox)
    rb = rbox[0]
    for i, lb in enumerate(lbox):
        more = i < n - 1
        if i == 0:
            rows += [indent + lb[0] + " " * 6 + rb[0], indent + lb[1] + "--+" + ARROW + rb[1]]
            rows.append(indent + lb[2] + ("  |   " if more else " " * 6) + rb[2])
        else:
            rows += [indent + lb[0] + "  |", indent + lb[1] + "--+"]
            rows.append(indent + lb[2] + ("  |" if more else ""))
    return [r.rstrip() for r in rows]


def _chains(v: ProcView) -> list[str]:
    """Each patch chain of an nfv (or of the primary's forwarder) as a row of boxes."""
    nxt = {e.src: e.dst for e in v.edges}
    order = {p: i for i, p in enumerate(v.ports)}
    dsts = set(nxt.values())

    def key(p: str) -> tuple[int, str]:
        return (order.get(p, len(order)), p)

    seen: set[str] = set()
    lines: list[str] = []

    def walk(start: str) -> None:
        chain = [start]
        seen.add(start)
        cur = start
        while cur in nxt:
            cur = nxt[cur]
            chain.append(cur)
            if cur in seen:
                break
            seen.add(cur)
        lines.extend(draw_chain(chain))

    for s in sorted((s for s in nxt if s not in dsts), key=key):
        walk(s)
    for s in sorted(nxt, key=key):  # whatever is left lies on a loop
        if s not in seen:
            walk(s)
    idle = [p for p in v.ports if p not in seen]
    if idle:
        lines.append(f"  not patched: {', '.join(idle)}")
    if not v.edges and not v.ports:
        lines.append("  (no ports)")
    return lines


def _component_lines(v: ProcView) -> list[str]:
    comps: dict[str, list[Edge]] = {}
    for e in v.edges:
        comps.setdefault(e.comp, []).append(e)
    lines = []
    for name, edges in comps.items():
        lines.append(f"  {name} ({edges[0].comp_type})")
        real = [e for e in edges if e.src and e.dst]
        if not real:
            lines.append("    (ports not attached yet)")
            continue
        left = list(dict.fromkeys(e.src for e in real))
        right = list(dict.fromkeys(e.dst for e in real))
        lines += draw_fan(left, right, "    ")
    if v.idle_cores:
        lines.append(f"  unused cores: {', '.join(str(c) for c in v.idle_cores)}")
    if not comps:
        lines.append("  (no components)")
    return lines


def _pcap_lines(v: ProcView) -> list[str]:
    lines = []
    for e in v.edges:
        lines += draw_chain([e.src, f"capture ({v.name})"])
    for c in v.raw.get("core") or []:
        if c.get("role") == "write" and c.get("filename"):
            lines.append(f"  writing {c['filename']}")
    return lines or ["  (no receive port)"]


# -- command ---------------------------------------------------------------------------------


def _write_image(dot_text: str, fname: str, fmt: str) -> None:
    exe = shutil.which("dot")
    if exe is None:
        raise CliError(
            f"Cannot create '{fname}': graphviz 'dot' is not installed. "
            "Use 'topo term', 'topo dot' or a .dot/.json/.yaml file instead."
        )
    fmt = "jpg" if fmt == "jpeg" else fmt
    # graphviz 2.43 fails ("trouble in init_rank") on SPP's newrank layout when a labelled edge joins
    # two ports of the same rank (ring -> ring in a classifier); the classic ranking draws it fine.
    reason = ""
    for text in (dot_text, dot_text.replace("newrank=true;\n", "", 1)):
        res = subprocess.run(
            [exe, f"-T{fmt}", "-o", fname], input=text.encode(), capture_output=True, check=False
        )
        if res.returncode == 0:
            return
        reason = " ".join(res.stderr.decode(errors="replace").split()) or f"exit status {res.returncode}"
    raise CliError(f"Error: graphviz failed to create '{fname}': {reason}")


def run_topo(client: SppCtlClient, config: Any, subgraphs: dict[str, str], arg: str) -> None:
    """``topo term`` | ``topo dot`` | ``topo FILE[.ext] [TYPE]`` | ``topo http``."""
    args = arg.split()
    if not args or len(args) > 2:
        raise CliError("Usage: topo term | topo dot | topo FILE[.dot|.json|.yaml|.png|.jpg|.svg] [TYPE]")
    if args[0] == "http":
        raise CliError("'topo http' (websocket viewer) is not supported; use 'topo term' or 'topo FILE.svg'.")
    if args == ["term"]:
        topo = Topology.collect(client, with_primary=True)
        for w in topo.warnings:
            print(w)
        if not topo.procs and topo.primary is None:
            print("No secondary process exist!")
            return
        for line in topo.term():
            print(line)
        return
    topo = Topology.collect(client)
    for w in topo.warnings:
        print(w)
    if not topo.has_ports():
        raise CliError("No secondary process exist!")
    if args == ["dot"]:
        print(topo.dot(config, subgraphs), end="")
        return
    fname = args[0]
    ftype = args[1] if len(args) == 2 else Path(fname).suffix.lstrip(".")
    ftype = ftype.lower()
    if ftype not in IMAGE_TYPES | TEXT_TYPES:
        raise CliError(f"Invalid file type '{ftype}': use dot, json, yaml, png, jpg, svg, bmp, gif or pdf.")
    try:
        if ftype == "dot":
            Path(fname).write_text(topo.dot(config, subgraphs), encoding="utf-8")
        elif ftype in ("json", "js"):
            Path(fname).write_text(json.dumps(topo.to_data(), indent=2) + "\n", encoding="utf-8")
        elif ftype in ("yaml", "yml"):
            Path(fname).write_text(yaml.safe_dump(topo.to_data(), sort_keys=False), encoding="utf-8")
        else:
            _write_image(topo.dot(config, subgraphs), fname, ftype)
    except OSError as e:
        raise CliError(f"Cannot write '{fname}': {e.strerror}.") from e
    print(f"Create topology: '{fname}'")
