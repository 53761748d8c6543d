"""Pictures of one fixed topology, compared byte for byte with tests/snapshots/topo.* (DOT, SVG,
Mermaid), plus what each must hold: well-formed SVG with the names as text, ids the page can
update, every edge in Mermaid. ``SPP_UPDATE_SNAPSHOTS=1`` rewrites the snapshots after a
deliberate change (then read the diff)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from spp.control.cli.config import CliConfig
from spp.control.cli.topo import Topology, _nfv_view, _pcap_view, _worker_view
from spp.control.view.mermaid import render_mermaid
from spp.control.view.model import Snapshot, build_graph, port_counters, port_node_id
from spp.control.view.plot import render_svg_plot
from spp.control.view.rates import rates
from spp.control.view.svg import render_svg

SNAPSHOTS = Path(__file__).parent / "snapshots"
SVG_NS = "{http://www.w3.org/2000/svg}"


def vlan() -> dict[str, Any]:
    return {"operation": "none", "id": 0, "pcp": 0}


def port(name: str) -> dict[str, Any]:
    return {"port": name, "vlan": vlan()}


NFV1 = {
    "client-id": 1, "status": "running", "master-lcore": 1, "lcores": [1, 2],
    "ports": ["phy:0", "ring:0", "vhost:1"],
    "patches": [{"src": "phy:0", "dst": "ring:0"}, {"src": "ring:0", "dst": "vhost:1"}],
    "stats": [
        {"port": "phy:0", "rx": 100, "rx_drop": 0, "tx": 0, "tx_drop": 0, "rx_bytes": 6400,
         "tx_bytes": 0},
        {"port": "ring:0", "rx": 90, "rx_drop": 0, "tx": 100, "tx_drop": 0, "rx_bytes": 5760,
         "tx_bytes": 6400},
        {"port": "vhost:1", "rx": 0, "rx_drop": 0, "tx": 90, "tx_drop": 3, "rx_bytes": 0, "tx_bytes": 5760,
         "socket": "/tmp/sock1", "mode": "server", "connected": True, "running": True, "errors": 0},
    ],
}  # fmt: skip
VF2 = {
    "client-id": 2, "ports": ["phy:1", "ring:1", "ring:2", "ring:3", "ring:4"], "master-lcore": 3,
    "components": [
        {"core": 4, "name": "fwd1", "type": "forward", "rx_port": [port("ring:1")],
         "tx_port": [port("phy:1")], "counters": {"rx": 7, "tx": 7, "tx_drop": 0, "drop": 0}},
        {"core": 5, "name": "cls", "type": "classifier", "rx_port": [port("ring:2")],
         "tx_port": [port("ring:3"), port("ring:4")],
         "counters": {"rx": 5, "tx": 4, "tx_drop": 0, "drop": 1}},
        {"core": 6, "type": "unuse"},
    ],
    "classifier_table": [],
}  # fmt: skip
MIRROR3 = {
    "client-id": 3, "ports": ["ring:0", "ring:5", "ring:6"], "master-lcore": 7,
    "components": [{"core": 8, "name": "mr1", "type": "mirror", "rx_port": [port("ring:0")],
                    "tx_port": [port("ring:5"), port("ring:6")]}],
}  # fmt: skip
PCAP4 = {
    "client-id": 4, "status": "running", "master-lcore": 9,
    "core": [{"core": 10, "role": "receive", "rx_port": [{"port": "phy:1"}], "received": 12, "dropped": 0},
             {"core": 11, "role": "write", "filename": "/tmp/spp_pcap.20260101000000.phy1.1.1.pcap.lz4"}],
}  # fmt: skip
PRIMARY = {
    "master-lcore": 0, "lcores": [0],
    "phy_ports": [{"id": n, "eth": f"02:00:00:00:00:0{n}", "rx": 100 * n, "tx": 0, "tx_drop": 0, "rx_drop": 0,
                   "rx_bytes": 6400 * n, "tx_bytes": 0} for n in (0, 1)],
    "ring_ports": [{"id": n, "rx": 0, "rx_drop": 0, "tx": 0, "tx_drop": 0, "rx_bytes": 0, "tx_bytes": 0}
                   for n in range(7)],
}  # fmt: skip
PROCESSES = [
    {"type": "primary"},
    {"type": "nfv", "client-id": 1},
    {"type": "vf", "client-id": 2},
    {"type": "mirror", "client-id": 3},
    {"type": "pcap", "client-id": 4},
]
STATUSES = {"primary": PRIMARY, "nfv:1": NFV1, "vf:2": VF2, "mirror:3": MIRROR3, "pcap:4": PCAP4}


def snapshot() -> Snapshot:
    return Snapshot(processes=[dict(p) for p in PROCESSES], statuses=STATUSES)


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("SPP_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with SPP_UPDATE_SNAPSHOTS=1 once"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its snapshot"


def test_dot_snapshot() -> None:
    topo = Topology(
        [
            _nfv_view(1, NFV1),
            _worker_view("vf", 2, VF2),
            _worker_view("mirror", 3, MIRROR3),
            _pcap_view(4, PCAP4),
        ]
    )
    dot = topo.dot(CliConfig())
    check_snapshot("topo.dot", dot)
    assert 'phy_0 -> ring_0[label="nfv:1"' in dot and 'ring_2 -> ring_3[label="vf:2:c"' in dot


def test_svg_snapshot_is_accessible_text() -> None:
    graph = build_graph(snapshot())
    svg = render_svg(graph)
    check_snapshot("topo.svg", svg)
    root = ET.fromstring(svg)  # well-formed
    assert root.get("role") == "img" and root.find(f"{SVG_NS}title") is not None
    texts = {t.text for t in root.iter(f"{SVG_NS}text") if t.text}
    for name in ("primary", "nfv:1", "vf:2", "mirror:3", "pcap:4", "phy:0", "phy:1", "ring:0", "ring:6",
                 "vhost:1", "/tmp/sock1", "fwd1", "cls", "mr1", "virtio front-end"):  # fmt: skip
        assert name in texts, name
    ids = {e.get("id") for e in root.iter() if e.get("id")}
    for node in (port_node_id("ring:0"), port_node_id("vhost:1")):
        assert {node, f"rate-{node}", f"ratetx-{node}", f"drops-{node}"} <= ids
    labels = [g.get("aria-label") for g in root.iter(f"{SVG_NS}g") if "edge" in (g.get("class") or "")]
    assert "phy:0 to ring:0, patched by nfv:1" in labels
    assert "ring:2 to cls, wired in vf:2" in labels
    assert "phy:1 to pcap:4 capture, captured by pcap:4" in labels


def test_mermaid_snapshot_has_every_edge() -> None:
    graph = build_graph(snapshot())
    mmd = render_mermaid(graph)
    check_snapshot("topo.mmd", mmd)
    assert mmd.startswith("flowchart LR\n")
    arrows = [line for line in mmd.splitlines() if "-->" in line or "-.->" in line]
    assert len(arrows) == len(graph.edges) == 12
    assert "  port_phy_0 -->|nfv:1| port_ring_0" in mmd


def test_graph_of_an_idle_process_has_dashed_links() -> None:
    idle = {**NFV1, "status": "idling"}
    graph = build_graph(Snapshot(processes=[{"type": "nfv", "client-id": 1}], statuses={"nfv:1": idle}))
    assert {e.running for e in graph.edges if e.kind == "patch"} == {False}
    assert 'class="edge idle"' in render_svg(graph)
    assert "-.->|nfv:1|" in render_mermaid(graph)


def test_rates_from_counters() -> None:
    before = port_counters(snapshot())
    assert before[port_node_id("vhost:1")]["tx_bytes"] == 5760  # nfv's own port (no primary row)
    assert before[port_node_id("phy:1")]["rx"] == 100  # the primary's totals for phy and ring
    later = {k: dict(v) for k, v in before.items()}
    later[port_node_id("vhost:1")].update(tx=190, tx_bytes=5760 + 6400, tx_drop=5)
    r = rates(before, later, 2.0)[port_node_id("vhost:1")]
    assert (r["tx_pps"], r["tx_bps"], r["drop_pps"]) == (50.0, 25600.0, 1.0)
    assert rates(None, later, 2.0)[port_node_id("vhost:1")]["tx_pps"] is None


@pytest.mark.parametrize("points", [0, 1, 5])
def test_rate_plot_svg_is_well_formed(points: int) -> None:
    series = {"tx ring:0": [(float(t), 1000.0 * t) for t in range(points)], "rx ring:1": []}
    svg = render_svg_plot(series, "rates", "pps")
    root = ET.fromstring(svg)
    assert {t.text for t in root.iter(f"{SVG_NS}text")} >= {"tx ring:0", "rx ring:1", "seconds", "pps"}
