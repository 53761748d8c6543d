"""A small layered layout: traffic flows left to right, one column per step.

Good enough for a panel's few dozen nodes and fully deterministic (snapshot tests compare the
SVG byte for byte): columns from the longest path after cycles are broken in node order, rows
from two barycentre passes, fixed node sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Graph

NODE_W = 200
NODE_H = 82
COL_GAP = 84
ROW_GAP = 22
MARGIN = 16
LEGEND_H = 58  # the process row above the graph


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int = NODE_W
    h: int = NODE_H

    @property
    def right(self) -> tuple[int, int]:
        return self.x + self.w, self.y + self.h // 2

    @property
    def left(self) -> tuple[int, int]:
        return self.x, self.y + self.h // 2


@dataclass
class Layout:
    boxes: dict[str, Box]
    width: int
    height: int


def _ranks(graph: Graph, ids: list[str]) -> dict[str, int]:
    succ: dict[str, list[str]] = {i: [] for i in ids}
    for e in graph.edges:
        if e.src in succ and e.dst in succ and e.src != e.dst:
            succ[e.src].append(e.dst)
    # Break cycles: drop edges that go back to a node on the current DFS path.
    state: dict[str, int] = {}
    forward: dict[str, list[str]] = {i: [] for i in ids}
    for root in ids:
        if root in state:
            continue
        stack = [(root, iter(succ[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                continue  # back edge
            else:
                forward[node].append(nxt)
                if nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(succ[nxt])))
    indeg = {i: 0 for i in ids}
    for i in ids:
        for j in forward[i]:
            indeg[j] += 1
    rank = dict.fromkeys(ids, 0)
    queue = [i for i in ids if indeg[i] == 0]
    while queue:
        i = queue.pop(0)
        for j in forward[i]:
            rank[j] = max(rank[j], rank[i] + 1)
            indeg[j] -= 1
            if indeg[j] == 0:
                queue.append(j)
    return rank


def layout(graph: Graph) -> Layout:
    procs = [n.id for n in graph.nodes.values() if n.kind == "process"]
    ids = [n.id for n in graph.nodes.values() if n.kind != "process"]
    rank = _ranks(graph, ids)
    columns: dict[int, list[str]] = {}
    for i in ids:
        columns.setdefault(rank[i], []).append(i)
    preds: dict[str, list[str]] = {i: [] for i in ids}
    for e in graph.edges:
        if e.src in preds and e.dst in preds:
            preds[e.dst].append(e.src)
    pos = {i: n for col in columns.values() for n, i in enumerate(col)}
    for _ in range(2):
        for r in sorted(columns)[1:]:
            col = columns[r]
            keys = {}
            for n, i in enumerate(col):
                ps = [pos[p] for p in preds[i] if rank[p] < rank[i]]
                keys[i] = (sum(ps) / len(ps) if ps else float(n), n)
            col.sort(key=keys.__getitem__)
            for n, i in enumerate(col):
                pos[i] = n
    boxes: dict[str, Box] = {}
    top = MARGIN + LEGEND_H
    for r, col in columns.items():
        for n, i in enumerate(col):
            boxes[i] = Box(MARGIN + r * (NODE_W + COL_GAP), top + n * (NODE_H + ROW_GAP))
    pw, gap = 132, 10
    for n, i in enumerate(procs):
        boxes[i] = Box(MARGIN + n * (pw + gap), MARGIN, pw, 40)
    width = max([b.x + b.w for b in boxes.values()], default=0) + MARGIN
    height = max([b.y + b.h for b in boxes.values()], default=0) + MARGIN + 24
    return Layout(boxes, max(width, 320), max(height, 120))
