"""Plug latency of spp-agent: ``action`` written to etcd -> ``port_status`` ``up``, on one host and
on three sharing one 3-member etcd cluster (spp/integrations/multihost.py), against the original
agent's REST sequence for the same plug timed alone on the same spp-ctl.

For each flat port the mechanism driver's steps run as ``spp-agent port plug`` does them (claim a
free vhost by compare-and-swap, write ``bind_port``); the clock starts just before the ``action``
= ``plug`` put and stops when a watch on ``port_status/`` delivers ``up``. Ports are unplugged
between rounds (one round = every vhost of the hosts in use, untimed), so any number of ports
runs on a few vhosts. Modes:

* ``seq``: one plug at a time per host (on three hosts, three such streams at once): the latency
  of one request.
* ``burst``: every vhost of the round asked at once: ports per second, and the latency a
  request sees behind the others.
* ``rest``: the original agent's request for a flat plug, ``PUT /v1/vfs/1/classifier_table``
  (mac -> ring:2v, spec §3.6), timed alone on host 1's spp-ctl with its agent stopped: the floor
  under the agent's figure.

Run as root (namespaces, veths)::

    flock /tmp/spp-bench.lock .venv/bin/python bench/plug_latency.py --ports 100 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from spp.integrations.agent import keys, tools
from spp.integrations.agent.etcd import Etcd, parse_endpoints
from spp.integrations.multihost import VF_CLIENT_ID, Host, MultiHost

WAIT = 60.0


@dataclass
class Sample:
    """Latencies (s) of one mode's run, and the wall time the plugs took (for ports/s)."""

    latencies: list[float] = field(default_factory=list)
    busy: float = 0.0

    def summary(self) -> dict[str, float]:
        lat = np.array(self.latencies) * 1000
        return {
            "ports": len(lat),
            "median_ms": float(np.median(lat)),
            "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()),
            "ports_per_s": len(lat) / self.busy if self.busy else 0.0,
        }


class StatusWatch:
    """One watch on every host's ``port_status/``: when each port's ``up`` arrived."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self.arrived: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Event] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        rev = await self.etcd.revision()
        self.task = asyncio.ensure_future(self._run(rev + 1))

    async def _run(self, rev: int) -> None:
        async for ev in self.etcd.watch_prefix(f"{keys.ROOT}port_status/", rev):
            if ev.value == keys.UP:
                port_id = ev.key.rsplit("/", 1)[1]
                self.arrived.setdefault(port_id, time.perf_counter())
                self.waiters.setdefault(port_id, asyncio.Event()).set()

    async def wait(self, port_id: str) -> float:
        event = self.waiters.setdefault(port_id, asyncio.Event())
        await asyncio.wait_for(event.wait(), WAIT)
        return self.arrived[port_id]

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@dataclass
class Pending:
    host: Host
    port_id: str
    vhost_id: int


async def prepare(etcd: Etcd, host: Host, vhost_id: int) -> Pending:
    """The driver's steps before ``action`` (spp-agent port plug's, on a vhost chosen here)."""
    port_id = str(uuid.uuid4())
    claimed = await etcd.replace(keys.vhost_key(host.name, host.physnet, vhost_id), keys.FREE, port_id)
    if not claimed:
        raise RuntimeError(f"{host.name}: vhost {vhost_id} is not free")
    b = uuid.uuid4().bytes
    bind = keys.BindPort(f"fa:16:3e:{b[0]:02x}:{b[1]:02x}:{b[2]:02x}", vhost_id, None)
    await etcd.put(keys.key("bind_port", host.name, port_id), bind.dumps())
    return Pending(host, port_id, vhost_id)


async def timed_plug(etcd: Etcd, watch: StatusWatch, p: Pending) -> tuple[float, float]:
    """(start, latency) of ``action`` = ``plug`` until ``up`` was seen."""
    start = time.perf_counter()
    await etcd.put(keys.key("action", p.host.name, p.port_id), keys.PLUG)
    return start, await watch.wait(p.port_id) - start


async def unplug_round(etcd: Etcd, pending: list[Pending]) -> None:
    done = await asyncio.gather(*(tools.unplug(etcd, p.host.name, p.port_id, wait=WAIT) for p in pending))
    if not all(done):
        raise RuntimeError("an unplug did not finish")


async def _stream(etcd: Etcd, watch: StatusWatch, host: Host, plugged: list[Pending]) -> list[float]:
    """Plug every vhost of ``host`` one after the other; the latencies."""
    out = []
    for v in range(host.vhosts):
        p = await prepare(etcd, host, v)
        out.append((await timed_plug(etcd, watch, p))[1])
        plugged.append(p)
    return out


async def run_seq(etcd: Etcd, watch: StatusWatch, hosts: list[Host], ports: int) -> Sample:
    """One plug at a time on each host; the hosts' streams run side by side."""
    sample = Sample()
    rounds = -(-ports // (len(hosts) * hosts[0].vhosts))
    for _ in range(rounds):
        plugged: list[Pending] = []
        began = time.perf_counter()
        per_host = await asyncio.gather(*(_stream(etcd, watch, h, plugged) for h in hosts))
        sample.busy += time.perf_counter() - began
        sample.latencies += [lat for lats in per_host for lat in lats]
        await unplug_round(etcd, plugged)
    return sample


async def run_burst(etcd: Etcd, watch: StatusWatch, hosts: list[Host], ports: int) -> Sample:
    """Every vhost of every host in use asked at once, round after round."""
    sample = Sample()
    rounds = -(-ports // (len(hosts) * hosts[0].vhosts))
    for _ in range(rounds):
        pending = [await prepare(etcd, h, v) for h in hosts for v in range(h.vhosts)]
        timings = await asyncio.gather(*(timed_plug(etcd, watch, p) for p in pending))
        first = min(start for start, _ in timings)
        last = max(start + lat for start, lat in timings)
        sample.busy += last - first
        sample.latencies += [lat for _, lat in timings]
        await unplug_round(etcd, pending)
    return sample


def run_rest(host: Host, ports: int) -> Sample:
    """The original agent's flat plug, ``PUT classifier_table add``, timed alone; removed again
    per round (untimed)."""
    sample = Sample()
    url = f"http://{host.api}/v1/vfs/{VF_CLIENT_ID}/classifier_table"
    with httpx.Client(timeout=30) as http:
        done = 0
        while done < ports:
            added = []
            for v in range(min(host.vhosts, ports - done)):
                b = uuid.uuid4().bytes
                body = {
                    "action": "add",
                    "type": "mac",
                    "mac_address": f"fa:16:3e:{b[0]:02x}:{b[1]:02x}:{b[2]:02x}",
                    "port": f"ring:{2 * v}",
                }
                start = time.perf_counter()
                r = http.put(url, json=body)
                took = time.perf_counter() - start
                r.raise_for_status()
                sample.latencies.append(took)
                sample.busy += took
                added.append(body)
            for body in added:
                http.put(url, json={**body, "action": "del"}).raise_for_status()
            done += len(added)
    return sample


def wait_agent_ready(host: Host) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        if host.procs["spp-agent"].poll() is not None:
            raise RuntimeError(f"{host.name}: spp-agent exited: {host.log('spp-agent')[-2000:]}")
        names = {c.get("name") for c in host.vf_status().get("components", [])}
        if {"classifier", "merger", f"forward_{host.vhosts - 1}_rx"} <= names:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{host.name}: agent did not build spp_vf")
        time.sleep(0.2)


async def measure(mh: MultiHost, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    endpoints = parse_endpoints(",".join(mh.endpoints))
    etcd, watch_etcd = Etcd(endpoints, timeout=30), Etcd(endpoints, timeout=30)
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for host in mh.hosts:
            await tools.config_build(etcd, host.name, host.mappings)
        mh.start_agents()
        for host in mh.hosts:
            await asyncio.to_thread(wait_agent_ready, host)
        watch = StatusWatch(watch_etcd)
        await watch.start()
        one, three = mh.hosts[:1], mh.hosts
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs}", file=sys.stderr)
            for name, coro in (
                ("agent seq, 1 host", lambda: run_seq(etcd, watch, one, args.ports)),
                ("agent burst, 1 host", lambda: run_burst(etcd, watch, one, args.ports)),
                ("agent seq, 3 hosts", lambda: run_seq(etcd, watch, three, args.ports)),
                ("agent burst, 3 hosts", lambda: run_burst(etcd, watch, three, args.ports)),
            ):
                s = (await coro()).summary()
                results.setdefault(name, []).append(s)
                print(f"  {name}: {s}", file=sys.stderr)
            # the original's REST sequence on the same spp-ctl, its agent stopped meanwhile
            host = mh.hosts[0]
            host.stop("spp-agent")
            s = (await asyncio.to_thread(run_rest, host, args.ports)).summary()
            results.setdefault("original REST sequence, 1 host", []).append(s)
            print(f"  rest: {s}", file=sys.stderr)
            host.start_agent(mh.endpoints)
            await asyncio.to_thread(wait_agent_ready, host)
        await watch.stop()
    finally:
        await etcd.close()
        await watch_etcd.close()
    return results


def table(results: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| mode | ports per run | median ms (runs) | p99 ms (runs) | max ms (runs) | ports/s (runs) |",
        "|---|---|---|---|---|---|",
    ]

    def col(runs: list[dict[str, float]], key: str, fmt: str) -> str:
        med = statistics.median(r[key] for r in runs)
        each = ", ".join(format(r[key], fmt) for r in runs)
        return f"**{med:{fmt}}** ({each})"

    for name, runs in results.items():
        lines.append(
            f"| {name} | {int(runs[0]['ports'])} | {col(runs, 'median_ms', '.1f')} "
            f"| {col(runs, 'p99_ms', '.1f')} | {col(runs, 'max_ms', '.0f')} "
            f"| {col(runs, 'ports_per_s', '.1f')} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ports", type=int, default=100, help="plugs per mode and run (default 100)")
    p.add_argument("--vhosts", type=int, default=10, help="vhosts per host (default 10, at most 14)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("plug_latency: needs root (network namespaces)", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    tag = f"b{os.getpid() % 100000}"
    with MultiHost(tag=tag, host_options={"vhosts": args.vhosts}) as mh:
        results = asyncio.run(measure(mh, args))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    info = {
        "date": started,
        "commit": commit.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "command": " ".join(sys.argv),
    }
    print(json.dumps(info))
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
