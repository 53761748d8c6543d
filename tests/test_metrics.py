"""``GET /metrics`` against real processes: parsed with prometheus-client's own parser, its
counters equal what ``status`` says, every per-port series has ``process`` and ``port``, and
spp-ctl's refusals are counted. Also: without ``--web`` there is no page, but metrics."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from spp.integrations.testbed import Testbed, wait_for

PORT_METRICS = {
    "spp_port_rx_packets": "rx",
    "spp_port_tx_packets": "tx",
    "spp_port_rx_dropped_packets": "rx_drop",
    "spp_port_tx_dropped_packets": "tx_drop",
    "spp_port_rx_bytes": "rx_bytes",
    "spp_port_tx_bytes": "tx_bytes",
}


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    """nullpmd:0 -> ring:0 (nfv 1), ring:0 -> nullpmd:1 (nfv 2), run for a moment and stopped."""
    with Testbed(nb_rings=2) as b:
        nfv1 = b.launch_nfv(1)
        nfv2 = b.launch_nfv(2, main_lcore=1)
        nfv1.add("nullpmd:0")
        nfv1.add("ring:0")
        nfv1.patch("nullpmd:0", "ring:0")
        nfv2.add("ring:0")
        nfv2.add("nullpmd:1")
        nfv2.patch("ring:0", "nullpmd:1")
        nfv1.forward()
        nfv2.forward()
        wait_for(lambda: b.ring_stats(0)["rx"] > 10000, 20, "traffic through ring:0")
        # Long enough for the workers' CPU time to show: /proc counts it in 10 ms ticks, and at
        # tens of Mpps the first 10,000 packets take well under one.
        time.sleep(0.3)
        nfv1.stop()
        # nfv 2 empties the ring, then everything stands still.
        wait_for(lambda: b.ring_stats(0)["fill"] == 0, 20, "ring:0 to drain")
        nfv2.stop()
        yield b


def scrape(bed: Testbed) -> dict[str, Any]:
    r = bed.http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=")  # the text format
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def samples(fams: dict[str, Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``{sorted label items: value}`` of the ``_total`` (or plain) samples of one family."""
    out = {}
    for s in fams[name].samples:
        if s.name in (name, name + "_total"):
            out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_port_counters_match_status(bed: Testbed) -> None:
    fams = scrape(bed)
    primary = bed.primary_status()
    nfv1 = {s["port"]: s for s in bed.ok("GET", "/v1/nfvs/1").json()["stats"]}
    nfv2 = {s["port"]: s for s in bed.ok("GET", "/v1/nfvs/2").json()["stats"]}
    for metric, key in PORT_METRICS.items():
        assert fams[metric].type == "counter"
        series = samples(fams, metric)
        for labels in series:
            assert {k for k, _ in labels} == {"process", "port"}, (metric, labels)
        by = {(dict(k)["process"], dict(k)["port"]): v for k, v in series.items()}
        # Each process's own share equals its own status...
        assert by[("nfv:1", "ring:0")] == nfv1["ring:0"][key]
        assert by[("nfv:2", "ring:0")] == nfv2["ring:0"][key]
        assert by[("nfv:1", "nullpmd:0")] == nfv1["nullpmd:0"][key]
        assert by[("nfv:2", "nullpmd:1")] == nfv2["nullpmd:1"][key]
        # ...and the shares of a ring add up to the primary's total.
        ring_total = sum(v for (_proc, port), v in by.items() if port == "ring:0")
        assert ring_total == primary["ring_ports"][0][key], metric
    rx = samples(fams, "spp_port_rx_packets")
    assert rx[(("port", "nullpmd:0"), ("process", "nfv:1"))] > 10000
    tx_bytes = samples(fams, "spp_port_tx_bytes")
    assert tx_bytes[(("port", "nullpmd:1"), ("process", "nfv:2"))] == 64 * nfv2["nullpmd:1"]["tx"]


def test_process_state_ring_fill_and_cpu(bed: Testbed) -> None:
    fams = scrape(bed)
    up = {dict(k)["process"]: v for k, v in samples(fams, "spp_process_up").items()}
    assert up == {"primary": 1.0, "nfv:1": 1.0, "nfv:2": 1.0}
    fwd = {dict(k)["process"]: v for k, v in samples(fams, "spp_process_forwarding").items()}
    assert fwd["nfv:1"] == 0.0 and fwd["nfv:2"] == 0.0
    fill = samples(fams, "spp_ring_fill_packets")
    status = bed.primary_status()["ring_ports"]
    for ring in (0, 1):
        assert fill[(("port", f"ring:{ring}"), ("process", "primary"))] == status[ring]["fill"]
    assert samples(fams, "spp_ring_capacity_packets")[(("port", "ring:0"), ("process", "primary"))] == 1024
    threads = {dict(k)["thread"]: v for k, v in samples(fams, "spp_thread_cpu_seconds").items()
               if dict(k)["process"] == "nfv:1"}  # fmt: skip
    worker = [name for name in threads if name == "nfv1-fwd"]
    assert worker and threads[worker[0]] > 0, threads  # the worker forwarded for a while
    total = {dict(k)["process"]: v for k, v in samples(fams, "spp_process_cpu_seconds").items()}
    assert total["nfv:1"] >= threads[worker[0]]


def test_refusals_are_counted(bed: Testbed) -> None:
    before = samples(scrape(bed), "spp_ctl_command_errors")
    assert bed.http.put("/v1/nfvs/1/patches", json={"src": "ring:1", "dst": "ring:0"}).status_code == 400
    assert bed.http.put("/v1/nfvs/9/forward", json={"action": "start"}).status_code == 404
    r = bed.http.put("/v1/primary/launch", json={"client_id": 5, "proc_name": "nope", "eal": {}, "app": {}})
    assert r.status_code == 400
    fams = scrape(bed)
    after = samples(fams, "spp_ctl_command_errors")
    key = (("endpoint", "v1/nfvs/N"), ("status", "400"))
    assert after[key] == before.get(key, 0) + 1
    assert after[(("endpoint", "v1/nfvs/N"), ("status", "404"))] >= 1
    assert samples(fams, "spp_ctl_launch_errors")[()] == 1


def test_without_web_there_is_no_page_but_metrics(bed: Testbed) -> None:
    assert bed.http.get("/").status_code == 404
    assert bed.http.get("/web/app.js").status_code == 404
    assert bed.http.get("/web/ws").status_code == 404
    assert bed.http.get("/metrics").status_code == 200


def test_grafana_dashboard_uses_only_exported_metrics(bed: Testbed) -> None:
    dashboard = json.loads((Path(__file__).parents[1] / "docs/grafana/spp-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {m for e in exprs for m in re.findall(r"\bspp_[a-z_]+", e)}
    r = bed.http.get("/metrics")
    exported = set(re.findall(r"^# TYPE (\S+) (\S+)", r.text, re.M))
    # A counter's samples end in _total (its TYPE line may name it with or without).
    counters = {n if n.endswith("_total") else f"{n}_total" for n, t in exported if t == "counter"}
    names = {n for n, _ in exported} | counters
    assert used and used <= names, used - names
    # Rates are taken of counters only; gauges are shown as they are.
    for e in exprs:
        for inner in re.findall(r"rate\((spp_[a-z_]+)", e):
            assert inner in counters, e
