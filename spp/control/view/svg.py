"""The graph as SVG text: names are ``<text>`` (searchable, read by screen readers), every node and
edge has a ``<title>``, and each port and component has an empty rate line (``id="rate-<node>"``)
that the web page fills in live. ``topo FILE.svg`` writes the same drawing."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from .layout import Box, Layout, layout
from .model import Edge, Graph, Node

#: Fill per port type (SPP's topo colours, lightened) and per other node kind.
FILLS = {
    "phy": "#ffffff",
    "ring": "#fff6b0",
    "vhost": "#faebd7",
    "virtio_user": "#faebd7",
    "tap": "#fff8dc",
    "nullpmd": "#d8f8f8",
    "pcap": "#ffe9a8",
    "component": "#e4ecff",
    "capture": "#ffe9a8",
    "frontend": "#e8f5e0",
    "process": "#f4f4f4",
}
#: Fill of a vhost socket's front-end by what it is (the back-end's ``peer.kind``).
FRONTEND_FILLS = {"vm": "#e8f5e0", "container": "#e0f0fa", "app": "#f5e8f5"}
#: One colour per process, in the order processes are listed.
PROCESS_COLORS = ("#1f5fbf", "#2e8b3a", "#d2691e", "#8b3a8b", "#b22222", "#00838f", "#5d4037", "#607d8b")
STYLE = """
.node rect{stroke:#444;stroke-width:1}
.node text{font:13px sans-serif;fill:#111}
.node text.detail,.node text.rate{font-size:11px;fill:#444}
.edge path{fill:none;stroke-width:1.8}
.edge.idle path{stroke-dasharray:6 4}
.edge text{font:11px sans-serif}
.match rect{stroke:#e00;stroke-width:3}
"""


def process_colors(graph: Graph) -> dict[str, str]:
    return {p.name: PROCESS_COLORS[n % len(PROCESS_COLORS)] for n, p in enumerate(graph.procs)}


def _text(x: int, y: int, value: str, cls: str = "", anchor: str = "start", ident: str = "") -> str:
    attrs = f' x="{x}" y="{y}"'
    if cls:
        attrs += f' class="{cls}"'
    if anchor != "start":
        attrs += f' text-anchor="{anchor}"'
    if ident:
        attrs += f" id={quoteattr(ident)}"
    return f"<text{attrs}>{escape(value)}</text>"


def _node(n: Node, b: Box, color: str | None) -> list[str]:
    kind_word = {"port": "port", "process": "process", "component": "component", "capture": "capture",
                 "frontend": "virtio front-end"}.get(n.kind, n.kind)  # fmt: skip
    aria = f"{n.label}, {kind_word}" + (f", {n.detail}" if n.detail else "")
    fill = FILLS.get(n.group if n.kind == "port" else n.kind, "#eeeeee")
    if n.kind == "frontend":  # a VM, a container or an application, each its own colour
        fill = FRONTEND_FILLS.get(n.group, fill)
    out = [
        f'<g class="node {n.kind}" id={quoteattr(n.id)} data-name={quoteattr(n.label)} role="listitem" '
        f"aria-label={quoteattr(aria)}>",
        f"<title>{escape(aria)}</title>",
    ]
    rx = 14 if n.kind == "component" else 4
    stroke = f' style="stroke:{color};stroke-width:2.5"' if color else ""
    out.append(f'<rect x="{b.x}" y="{b.y}" width="{b.w}" height="{b.h}" rx="{rx}" fill="{fill}"{stroke}/>')
    if n.kind == "process":
        out.append(_text(b.x + 8, b.y + 17, n.label))
        out.append(_text(b.x + 8, b.y + 32, n.detail or "-", "detail", ident=f"state-{n.id}"))
    else:
        out.append(_text(b.x + 8, b.y + 17, n.label))
        out.append(_text(b.x + 8, b.y + 31, _fit(n.detail, (b.w - 12) // 6), "detail"))
        if n.kind != "frontend":  # live rates: rx, tx (pps, bit/s), drops per second
            out.append(_text(b.x + 8, b.y + 46, "", "rate", ident=f"rate-{n.id}"))
            out.append(_text(b.x + 8, b.y + 60, "", "rate", ident=f"ratetx-{n.id}"))
            out.append(_text(b.x + 8, b.y + 74, "", "rate", ident=f"drops-{n.id}"))
    out.append("</g>")
    return out


def _edge_path(e: Edge, a: Box, b: Box) -> tuple[str, tuple[int, int]]:
    (x1, y1), (x2, y2) = a.right, b.left
    if x2 > x1:
        dx = max(30, (x2 - x1) // 2)
        return f"M{x1},{y1} C{x1 + dx},{y1} {x2 - dx},{y2} {x2},{y2}", ((x1 + x2) // 2, (y1 + y2) // 2 - 4)
    # Same column or backwards (a loop): leave below the source, come back under the target.
    low = max(a.y + a.h, b.y + b.h) + 18
    sx, sy = a.x + a.w // 2, a.y + a.h
    tx, ty = b.x + b.w // 2, b.y + b.h
    return f"M{sx},{sy} C{sx},{low} {tx},{low} {tx},{ty}", ((sx + tx) // 2, low - 2)


def render_svg(graph: Graph, lay: Layout | None = None, title: str = "SPP topology") -> str:
    lay = lay or layout(graph)
    colors = process_colors(graph)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width}" height="{lay.height}" '
        f'viewBox="0 0 {lay.width} {lay.height}" role="img" aria-labelledby="spp-topo-title" '
        'class="spp-topo">',
        f'<title id="spp-topo-title">{escape(title)}</title>',
        f"<style>{STYLE}</style>",
        "<defs>",
    ]
    for name, color in colors.items():
        out.append(
            f'<marker id="arrow-{_mid(name)}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>'
        )
    out.append(
        '<marker id="arrow-" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>'
    )
    out.append("</defs>")
    out.append('<g class="edges" role="list" aria-label="links">')
    for e in graph.edges:
        a, b = lay.boxes.get(e.src), lay.boxes.get(e.dst)
        if a is None or b is None:
            continue
        color = colors.get(e.process, "#555")
        d, (lx, ly) = _edge_path(e, a, b)
        src, dst = graph.nodes[e.src].label, graph.nodes[e.dst].label
        what = {"patch": "patched by", "component": "wired in", "capture": "captured by", "virtio": "virtio"}
        desc = f"{src} to {dst}, {what.get(e.kind, e.kind)} {e.label}".rstrip() + (
            "" if e.running else ", idle"
        )
        cls = "edge" + ("" if e.running else " idle")
        out.append(
            f'<g class="{cls}" data-process={quoteattr(e.process)} role="listitem" '
            f"aria-label={quoteattr(desc)}>"
        )
        out.append(f"<title>{escape(desc)}</title>")
        out.append(f'<path d="{d}" stroke="{color}" marker-end="url(#arrow-{_mid(e.process)})"/>')
        if e.label and e.kind != "component":
            out.append(
                f'<text x="{lx}" y="{ly}" text-anchor="middle" fill="{color}">{escape(e.label)}</text>'
            )
        out.append("</g>")
    out.append("</g>")
    out.append('<g class="nodes" role="list" aria-label="processes, ports and components">')
    for n in graph.nodes.values():
        b = lay.boxes.get(n.id)
        if b is not None:
            color = colors.get(n.label) if n.kind == "process" else colors.get(n.owner)
            out += _node(n, b, color)
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _fit(text: str, chars: int) -> str:
    """The end of a long path (the file name) rather than its start; the title has all of it."""
    return text if len(text) <= chars else "\u2026" + text[-(chars - 1) :]


def _mid(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
