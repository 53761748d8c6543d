"""``GET /metrics``: the panel in Prometheus' text format (prometheus-client), one status round
per scrape.

Every per-port series carries ``process`` and ``port`` labels. Per-port counters come from
each process's own share: the primary's ``process_stats`` (every process's row of the phy and
ring counters in the segment) and the ``stats`` of nfv, vf and mirror (their other ports), so
``sum by (port)`` gives the totals ``pri; status`` shows and nothing is counted twice. With a
primary that has no ``process_stats`` (SPP's C primary) its totals are exported under ``process="primary"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from spp.control.view.model import Snapshot, process_name

from .errors import ErrorCounts
from .observe import thread_cpu

__all__ = ["CONTENT_TYPE_LATEST", "PORT_COUNTERS", "render_metrics"]

#: status key -> (metric name without ``_total``, help)
PORT_COUNTERS = {
    "rx": ("spp_port_rx_packets", "Packets the port received (taken from its device, ring or file)."),
    "tx": ("spp_port_tx_packets", "Packets the port sent (accepted by its device, ring or file)."),
    "rx_drop": ("spp_port_rx_dropped_packets", "Packets lost on the way in (no buffer, bad frame)."),
    "tx_drop": ("spp_port_tx_dropped_packets", "Packets the port could not send; freed, not queued."),
    "rx_bytes": ("spp_port_rx_bytes", "Bytes of the received packets (frames without FCS)."),
    "tx_bytes": ("spp_port_tx_bytes", "Bytes of the sent packets (frames without FCS)."),
}
COMPONENT_COUNTERS = {
    "rx": ("spp_component_rx_packets", "Packets a vf/mirror component received."),
    "tx": ("spp_component_tx_packets", "Packets a vf/mirror component sent."),
    "tx_drop": ("spp_component_tx_dropped_packets", "Packets a component's ports refused."),
    "drop": ("spp_component_dropped_packets", "Packets a component discarded (no classifier entry)."),
}
PORT_LABELS = ["process", "port"]
#: processes whose status carries ``stats``: their own counters per port
PORT_STATS_TYPES = ("nfv", "vf", "mirror")


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class _Scrape(Collector):
    """Yields the families of one scrape, built beforehand from one status round."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def port_rows(snap: Snapshot) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(process, port, counters) of every process's own share of every port."""
    primary = snap.status("primary")
    shares = primary.get("process_stats")
    seen: set[tuple[str, str]] = set()
    if isinstance(shares, list):
        for e in shares:
            if isinstance(e, dict):
                key = (process_name(str(e.get("process")), _int(e.get("client-id"))), str(e.get("port")))
                seen.add(key)
                yield key[0], key[1], e
    elif primary:
        for kind, key in (("phy", "phy_ports"), ("ring", "ring_ports")):
            for p in primary.get(key) or []:
                if isinstance(p, dict):
                    seen.add(("primary", f"{kind}:{p.get('id')}"))
                    yield "primary", f"{kind}:{p.get('id')}", p
    for entry in snap.processes:
        kind = str(entry.get("type"))
        if kind not in PORT_STATS_TYPES:
            continue
        name = process_name(kind, _int(entry.get("client-id")))
        for s in snap.status(name).get("stats") or []:
            if isinstance(s, dict) and "port" in s:
                kind = str(s["port"]).split(":", 1)[0]
                if (name, str(s["port"])) in seen or (primary and kind in ("phy", "ring")):
                    continue  # the primary's rows are this process's own counters already
                yield name, str(s["port"]), s


def build_families(snap: Snapshot, pids: dict[str, int | None], errors: ErrorCounts) -> list[Metric]:
    fams: list[Metric] = []
    port_fams = {k: CounterMetricFamily(n, h, labels=PORT_LABELS) for k, (n, h) in PORT_COUNTERS.items()}
    for proc, port, counters in port_rows(snap):
        for key, fam in port_fams.items():
            v = _int(counters.get(key))
            if v is not None:
                fam.add_metric([proc, port], v)
    fams += port_fams.values()

    up = GaugeMetricFamily(
        "spp_process_up", "1 while the process answers spp-ctl.", labels=["process", "type"]
    )
    fwd = GaugeMetricFamily(
        "spp_process_forwarding",
        "1 while the process forwards or captures (nfv running, primary forwarder running, pcap running).",
        labels=["process", "type"],
    )
    for entry in snap.processes:
        kind = str(entry.get("type"))
        name = process_name(kind, _int(entry.get("client-id")))
        up.add_metric([name, kind], 0 if entry.get("status") == "not responding" else 1)
        st = snap.status(name)
        state = st.get("status")
        if kind == "primary" and isinstance(st.get("forwarder"), dict):
            state = st["forwarder"].get("status")
        if state is not None:
            fwd.add_metric([name, kind], 1 if state == "running" else 0)
    fams += [up, fwd]

    comp_fams = {
        k: CounterMetricFamily(n, h, labels=["process", "component", "type"])
        for k, (n, h) in COMPONENT_COUNTERS.items()
    }
    for entry in snap.processes:
        kind = str(entry.get("type"))
        if kind not in ("vf", "mirror"):
            continue
        name = process_name(kind, _int(entry.get("client-id")))
        for comp in snap.status(name).get("components") or []:
            c = comp.get("counters") if isinstance(comp, dict) else None
            if isinstance(c, dict) and "name" in comp:
                for key, fam in comp_fams.items():
                    v = _int(c.get(key))
                    if v is not None:
                        fam.add_metric([name, str(comp["name"]), str(comp.get("type", ""))], v)
    fams += comp_fams.values()

    primary = snap.status("primary")
    fill = GaugeMetricFamily("spp_ring_fill_packets", "Packets waiting in the ring now.", labels=PORT_LABELS)
    cap = GaugeMetricFamily("spp_ring_capacity_packets", "Slots of the ring.", labels=PORT_LABELS)
    for r in primary.get("ring_ports") or []:
        if isinstance(r, dict) and _int(r.get("fill")) is not None:
            fill.add_metric(["primary", f"ring:{r.get('id')}"], r["fill"])
            if _int(r.get("capacity")) is not None:
                cap.add_metric(["primary", f"ring:{r.get('id')}"], r["capacity"])
    pool = primary.get("pool")
    bufs = GaugeMetricFamily("spp_pool_buffers", "Packet buffers of the shared pool.", labels=["state"])
    if isinstance(pool, dict):
        for key, state in (("size", "total"), ("free", "free"), ("large_size", "large_total"),
                           ("large_free", "large_free")):  # fmt: skip
            if _int(pool.get(key)) is not None:
                bufs.add_metric([state], pool[key])
    fams += [fill, cap, bufs]

    pcap_fams = {
        "received": CounterMetricFamily("spp_pcap_received_packets", "Packets spp_pcap took from its port.",
                                        labels=PORT_LABELS),
        "dropped": CounterMetricFamily("spp_pcap_dropped_packets", "Packets spp_pcap could not queue.",
                                       labels=PORT_LABELS),
    }  # fmt: skip
    for entry in snap.processes:
        if entry.get("type") != "pcap":
            continue
        name = process_name("pcap", _int(entry.get("client-id")))
        for core in snap.status(name).get("core") or []:
            if isinstance(core, dict) and core.get("role") == "receive":
                ports = [str(p.get("port")) for p in core.get("rx_port") or [] if isinstance(p, dict)]
                for key, fam in pcap_fams.items():
                    if _int(core.get(key)) is not None and ports:
                        fam.add_metric([name, ports[0]], core[key])
    fams += pcap_fams.values()

    cpu = CounterMetricFamily(
        "spp_thread_cpu_seconds",
        "CPU time (user + system) of each thread of a process, by thread name: workers are named "
        "after their process (nfv1-fwd, spp_vf2-lcore3, primary-fwd).",
        labels=["process", "thread"],
    )
    total = CounterMetricFamily(
        "spp_process_cpu_seconds", "CPU time of the whole process.", labels=["process"]
    )
    for name, pid in pids.items():
        if pid is None:
            continue
        threads = thread_cpu(pid)
        if threads:
            total.add_metric([name], sum(threads.values()))
            for thread, seconds in sorted(threads.items()):
                cpu.add_metric([name, thread], seconds)
    fams += [total, cpu]

    cmd = CounterMetricFamily(
        "spp_ctl_command_errors",
        "REST requests that would have changed something and failed, by endpoint and HTTP status.",
        labels=["endpoint", "status"],
    )
    for (family, status), n in sorted(errors.commands.items()):
        cmd.add_metric([family, str(status)], n)
    launch = CounterMetricFamily("spp_ctl_launch_errors", "Failed PUT /v1/primary/launch requests.")
    launch.add_metric([], errors.launches)
    fams += [cmd, launch]
    return fams


def render_metrics(snap: Snapshot, pids: dict[str, int | None], errors: ErrorCounts) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(build_families(snap, pids, errors)))
    return generate_latest(registry)
