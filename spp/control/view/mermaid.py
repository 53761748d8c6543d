"""The graph as a Mermaid flowchart (``topo FILE.mmd``): renders in GitHub, GitLab and most wikis."""

from __future__ import annotations

from .model import Graph, Node
from .svg import FILLS, process_colors

SHAPES = {
    "port": ('["', '"]'),
    "process": ('[/"', '"/]'),
    "component": ('(["', '"])'),
    "capture": ('[("', '")]'),
    "frontend": ('{{"', '"}}'),
}


def _id(node_id: str) -> str:
    return node_id.replace("-", "_")


def _label(n: Node) -> str:
    text = n.label + (f"<br/>{n.detail}" if n.detail else "")
    return text.replace('"', "#quot;")


def render_mermaid(graph: Graph) -> str:
    colors = process_colors(graph)
    out = ["flowchart LR"]
    procs = [n for n in graph.nodes.values() if n.kind == "process"]
    if procs:
        out.append('  subgraph processes["processes"]')
        out.append("    direction LR")
        for n in procs:
            left, right = SHAPES["process"]
            out.append(f"    {_id(n.id)}{left}{_label(n)}{right}")
        out.append("  end")
    for n in graph.nodes.values():
        if n.kind != "process":
            left, right = SHAPES.get(n.kind, ('["', '"]'))
            out.append(f"  {_id(n.id)}{left}{_label(n)}{right}")
    styles: list[str] = []
    for i, e in enumerate(graph.edges):
        arrow = "-->" if e.running else "-.->"
        label = f"|{e.label}|" if e.label and e.kind != "component" else ""
        out.append(f"  {_id(e.src)} {arrow}{label} {_id(e.dst)}")
        if e.process in colors:
            styles.append(f"  linkStyle {i} stroke:{colors[e.process]}")
    groups: dict[str, list[str]] = {}
    for n in graph.nodes.values():
        cls = n.group if n.kind == "port" else n.kind
        groups.setdefault(cls, []).append(_id(n.id))
    for cls, members in groups.items():
        out.append(f"  classDef {cls}_node fill:{FILLS.get(cls, '#eeeeee')},stroke:#444")
        out.append(f"  class {','.join(members)} {cls}_node")
    out += styles
    return "\n".join(out) + "\n"
