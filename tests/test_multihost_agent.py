"""spp-agent on three hosts sharing one 3-member etcd cluster (spp/integrations/multihost.py):
plugs on every host at once, an etcd member killed and restarted under load, one host cut off
etcd and healed. The operator side is the stand-in mechanism driver (``spp-agent port plug``'s
code) in the root namespace. After each scenario every host is checked in etcd (``port_status``,
``action``, ``bind_port``, the vhost claims) and in its own spp-ctl (processes, and spp_vf's
classifier table: each plugged MAC exactly once, on its vhost's ring, nothing else), which is
what "every request done exactly once" leaves behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest

from spp.integrations.multihost import Host, MultiHost

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and veths"),
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed (scripts/install.sh)"),
]

agent = pytest.importorskip("spp.integrations.agent.tools", reason="spp-agent not in this tree")
from spp.integrations.agent import keys, tools  # noqa: E402
from spp.integrations.agent.etcd import Etcd, EtcdUnavailable, parse_endpoints  # noqa: E402
from tests.leakcheck import short_tag  # noqa: E402

T = TypeVar("T")
VHOSTS = 4
#: how long a request may take here: the machine is shared by many test processes
WAIT = 90.0


@pytest.fixture(scope="module")
def mh() -> Iterator[MultiHost]:
    with MultiHost(tag=short_tag(), host_options={"vhosts": VHOSTS}) as bed:
        asyncio.run(_configure(bed))
        bed.start_agents()
        for host in bed.hosts:
            _wait_agent_ready(bed, host)
        yield bed


async def _configure(mh: MultiHost) -> None:
    etcd = driver(mh)
    try:
        for host in mh.hosts:
            await tools.config_build(etcd, host.name, host.mappings)
    finally:
        await etcd.close()


def _wait_agent_ready(mh: MultiHost, host: Host) -> None:
    """The agent built the configured components on its host's spp_vf."""
    deadline = time.monotonic() + WAIT
    while True:
        proc = host.procs["spp-agent"]
        assert proc.poll() is None, host.log("spp-agent")[-3000:]
        names = {c.get("name") for c in host.vf_status().get("components", [])}
        if {"classifier", "merger", f"forward_{VHOSTS - 1}_rx"} <= names:
            return
        assert time.monotonic() < deadline, f"{host.name}: agent did not build spp_vf: {names}"
        time.sleep(0.2)


def driver(mh: MultiHost, *only: str) -> Etcd:
    """The mechanism driver's etcd client, on every member or ``only`` those named."""
    endpoints = [m.endpoint for m in mh.etcd.members if not only or m.name in only]
    return Etcd(parse_endpoints(",".join(endpoints)), timeout=30)


@dataclass(frozen=True)
class Port:
    host: Host
    port_id: str
    mac: str


def new_ports(mh: MultiHost, per_host: int, hosts: list[Host] | None = None) -> list[Port]:
    ports = []
    for host in hosts or mh.hosts:
        for _ in range(per_host):
            b = uuid.uuid4().bytes
            mac = f"fa:16:3e:{b[0]:02x}:{b[1]:02x}:{b[2]:02x}"
            ports.append(Port(host, str(uuid.uuid4()), mac))
    return ports


async def retried(op: Callable[[], Awaitable[T]], timeout: float = WAIT) -> T:
    """``op()`` again until it gets through: while a member is down or a leader is elected,
    etcd refuses calls ("leader changed", cancelled watches). Only idempotent steps go here."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await op()
        except EtcdUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def plug(etcd: Etcd, port: Port, timeout: float = WAIT) -> bool:
    """The mechanism driver's bind_port, key for key as ``spp-agent port plug`` (claim the first
    free vhost by compare-and-swap, ``bind_port``, ``action`` = ``plug``, wait for ``up``), each
    step retried through elections; a CAS whose reply was lost is recognised by its value."""
    host, pid = port.host, port.port_id
    claims, _ = await retried(lambda: etcd.get_prefix(keys.vhost_prefix(host.name, host.physnet)))
    vhost_id = None
    for kv in claims:
        if kv.value != keys.FREE:
            continue
        won = await retried(lambda kv=kv: etcd.replace(kv.key, keys.FREE, pid))
        if won or await retried(lambda kv=kv: etcd.get(kv.key)) == pid:
            vhost_id = int(kv.key.rsplit("/", 1)[1])
            break
    assert vhost_id is not None, f"no free vhost on {host.name}"
    bind = keys.BindPort(port.mac, vhost_id, None).dumps()
    await retried(lambda: etcd.put(keys.key("bind_port", host.name, pid), bind))
    await retried(lambda: etcd.put(keys.key("action", host.name, pid), keys.PLUG))
    status = keys.key("port_status", host.name, pid)
    deadline = time.monotonic() + timeout
    return await retried(lambda: etcd.wait_for_value(status, keys.UP, deadline - time.monotonic()), timeout)


async def unplug(etcd: Etcd, port: Port) -> None:
    """The driver's ``_unplug_port``: ``action`` = ``unplug`` (it exists: the port was plugged)."""
    await retried(lambda: etcd.put(keys.key("action", port.host.name, port.port_id), keys.UNPLUG))


async def unplug_all(etcd: Etcd, ports: list[Port], timeout: float = WAIT) -> None:
    """Unplug every port, then wait until the agents removed each ``action`` key."""

    async def one(port: Port) -> bool:
        await unplug(etcd, port)
        action = keys.key("action", port.host.name, port.port_id)
        deadline = time.monotonic() + timeout
        return await retried(lambda: tools.wait_gone(etcd, action, deadline - time.monotonic()), timeout)

    done = await asyncio.gather(*(one(p) for p in ports))
    assert all(done), [p.port_id for p, ok in zip(ports, done, strict=True) if not ok]


def classifier_macs(host: Host) -> dict[str, list[str]]:
    """MAC -> the ports it is classified to (a list, so a duplicate shows), from spp-ctl."""
    table: dict[str, list[str]] = {}
    for entry in host.vf_status().get("classifier_table", []):
        if entry.get("type") == "mac" and entry.get("value") != "default":
            table.setdefault(str(entry["value"]).lower(), []).append(entry["port"])
    return table


async def check_host(etcd: Etcd, host: Host, plugged: list[Port]) -> None:
    """etcd and the host's data plane agree with exactly the ports in ``plugged``."""
    mine = {p.port_id: p for p in plugged if p.host is host}

    async def under(kind: str) -> dict[str, str]:
        kvs, _ = await etcd.get_prefix(keys.host_prefix(kind, host.name))
        return {kv.key.rsplit("/", 1)[1]: kv.value for kv in kvs}

    assert await under("port_status") == dict.fromkeys(mine, keys.UP)
    assert await under("action") == dict.fromkeys(mine, keys.PLUG)
    bound = {pid: json.loads(v) for pid, v in (await under("bind_port")).items()}
    assert set(bound) == set(mine)
    claims = await etcd.get_prefix(keys.vhost_prefix(host.name))
    owners = {int(kv.key.rsplit("/", 1)[1]): kv.value for kv in claims[0]}
    assert len(owners) == VHOSTS
    expected_owners = {v: keys.FREE for v in range(VHOSTS)}
    expected_table: dict[str, list[str]] = {}
    for pid, b in bound.items():
        assert b["mac_address"] == mine[pid].mac
        expected_owners[b["vhost_id"]] = pid
        expected_table[mine[pid].mac] = [f"ring:{2 * b['vhost_id']}"]
    assert owners == expected_owners
    assert classifier_macs(host) == expected_table
    assert {"type": "primary"} in host.processes()
    assert host.procs["spp-agent"].poll() is None, host.log("spp-agent")[-3000:]


async def check_all(etcd: Etcd, mh: MultiHost, plugged: list[Port]) -> None:
    for host in mh.hosts:
        await check_host(etcd, host, plugged)


def test_plugs_on_every_host_at_once(mh: MultiHost) -> None:
    async def scenario() -> None:
        etcd = driver(mh)
        try:
            ports = new_ports(mh, VHOSTS)
            results = await asyncio.gather(*(plug(etcd, p) for p in ports))
            assert results == [True] * len(ports)
            await check_all(etcd, mh, ports)
            await unplug_all(etcd, ports)
            await check_all(etcd, mh, [])
        finally:
            await etcd.close()

    asyncio.run(scenario())


def test_an_etcd_member_killed_and_restarted_under_load(mh: MultiHost) -> None:
    """The agents start on e1 (first in their list). Half the plugs are asked, e1 is killed, the
    other half are asked while it is down (so they can only be seen after a fail-over and a watch
    resumed on another member), then e1 comes back. Unplugs the same way with e2, where the
    agents are then. The driver talks to e3 only: what is tested is the agents' side."""

    async def scenario() -> None:
        etcd = driver(mh, "e3")
        try:
            first, second = new_ports(mh, VHOSTS // 2), new_ports(mh, VHOSTS - VHOSTS // 2)
            pending = [asyncio.ensure_future(plug(etcd, p)) for p in first]
            await asyncio.sleep(0.3)
            await asyncio.to_thread(mh.etcd.kill_member, "e1")
            pending += [asyncio.ensure_future(plug(etcd, p)) for p in second]
            await asyncio.sleep(3)
            await asyncio.to_thread(mh.etcd.restart_member, "e1")
            results = await asyncio.gather(*pending)
            assert results == [True] * len(results)
            await check_all(etcd, mh, first + second)

            unplugs = asyncio.ensure_future(unplug_all(etcd, first))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(mh.etcd.kill_member, "e2")
            await unplug_all(etcd, second)
            await unplugs
            await asyncio.to_thread(mh.etcd.restart_member, "e2")
            await check_all(etcd, mh, [])
        finally:
            await etcd.close()

    asyncio.run(scenario())


def test_a_host_cut_off_from_etcd_catches_up_once_healed(mh: MultiHost) -> None:
    cut = mh.hosts[1]
    others = [h for h in mh.hosts if h is not cut]

    async def scenario() -> None:
        etcd = driver(mh)
        try:
            before = new_ports(mh, 2, [cut])
            assert all(await asyncio.gather(*(plug(etcd, p) for p in before)))
            cut.cut()
            try:
                during = new_ports(mh, 2, [cut])
                pending = [asyncio.ensure_future(plug(etcd, p, timeout=3 * WAIT)) for p in during]
                await unplug(etcd, before[0])
                elsewhere = new_ports(mh, 1, others)
                results = await asyncio.gather(*(plug(etcd, p) for p in elsewhere))
                assert all(results), "the other hosts go on while one is cut off"
                await asyncio.sleep(5)
                assert not any(t.done() for t in pending), "a cut-off agent cannot have answered"
            finally:
                cut.heal()
            assert all(await asyncio.gather(*pending))
            unplugged = keys.key("action", cut.name, before[0].port_id)
            assert await tools.wait_gone(etcd, unplugged, WAIT)
            plugged = [before[1], *during, *elsewhere]
            await check_all(etcd, mh, plugged)
            await unplug_all(etcd, plugged)
            await check_all(etcd, mh, [])
        finally:
            await etcd.close()

    asyncio.run(scenario())
