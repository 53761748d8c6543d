"""spp-agent where things go wrong: the agent killed in the middle of requests, etcd restarted
with requests pending (and its history compacted), spp_vf and spp_mirror restarted, garbage in
the keys. Each time: nothing left half-done, no request lost, none done twice (``port_status``
is written once: its etcd version stays 1). Tests that leave the host whole share one
(``bare_host``); those that kill etcd or leave garbage behind build their own (``host``)."""

from __future__ import annotations

import random
import signal
import time

import pytest

from spp.integrations.agent import keys, tools
from spp.integrations.agent.localetcd import LocalEtcd
from spp.integrations.testbed import wait_for
from tests.agentbed import AgentHost, etcd_run, frames_to, guests, receive, send_from_guest
from tests.netutil import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root for network namespaces and veth")

MAC1, MAC2 = "fa:16:3e:00:00:01", "fa:16:3e:00:00:02"


def written_once(h: AgentHost, port: str) -> bool:
    kv = h.etcd.kv(keys.key("port_status", "h1", port))
    return kv is not None and kv.value == keys.UP and kv.version == 1


def expected_table(ports: dict[str, tuple[str, int | None, int]]) -> list[tuple[str, str, str]]:
    out = []
    for mac, vlan, vhost in ports.values():
        ring = f"ring:{2 * vhost}"
        out.append(("mac", mac, ring) if vlan is None else ("vlan", f"{vlan}/{mac}", ring))
    return sorted(out)


def test_agent_killed_mid_plug_and_restarted(bare_host):
    h = bare_host
    base = h.wiring()
    # 1. The state an agent killed between two steps of a VLAN plug leaves: tag push set up on
    #    the merger, the classifier's ring detached; no table entry, no status.
    h.stop_agent(signal.SIGKILL)
    h.request_plug("p1", MAC1, 0, vlan=200)
    vf = h.bed.vf(1)
    vf.detach("ring:1", "rx", "merger")
    vf.attach("ring:1", "rx", "merger", {"operation": "add", "id": 200, "pcp": 0})
    vf.detach("ring:0", "tx", "classifier")
    h.start_agent()
    h.wait_up("p1")
    assert written_once(h, "p1")
    assert h.table() == [("vlan", f"200/{MAC1}", "ring:0")]
    assert h.vlan_ops() == {("merger", "rx", "ring:1"): "add:200", ("classifier", "tx", "ring:0"): "del"}
    assert h.wiring() == base
    # 2. Killed at arbitrary moments while requests come in: each is finished after the restart.
    rng = random.Random(11)
    ports = {"p1": (MAC1, 200, 0)}
    for rnd in range(4):
        if rnd % 2 == 0:
            h.request_plug("p2", MAC2, 1, vlan=None if rnd == 0 else 300)
            ports["p2"] = (MAC2, None if rnd == 0 else 300, 1)
        else:
            h.etcd.put(keys.key("action", "h1", "p2"), keys.UNPLUG)
            ports.pop("p2")
        time.sleep(rng.uniform(0.0, 0.4))
        h.stop_agent(signal.SIGKILL)
        h.start_agent()
        if "p2" in ports:
            h.wait_up("p2")
            assert written_once(h, "p2")
        else:
            h.wait_gone("p2")
            assert h.etcd.get(keys.vhost_key("h1", "phys1", 1)) == keys.FREE
        assert h.table() == expected_table(ports)
        assert h.wiring() == base
    assert written_once(h, "p1")


def test_etcd_restarted_with_requests_pending(etcd, host):
    h = host
    assert h.plug("p0", MAC1).up
    h.pause_agent()  # it does not see what follows until etcd is gone
    h.etcd.put(keys.key("action", "h1", "p0"), keys.UNPLUG)
    h.request_plug("p2", MAC2, 1, vlan=100)
    etcd.stop(signal.SIGKILL)
    h.resume_agent()
    wait_for(lambda: "reconnecting" in h.agent_log(), 30, "the agent to notice")
    etcd.start()
    h.wait_up("p2", timeout=60)
    h.wait_gone("p0", timeout=60)
    assert written_once(h, "p2")
    assert h.table() == [("vlan", f"100/{MAC2}", "ring:2")]
    # the watch was re-established: a new request is seen
    assert h.plug("p3", "fa:16:3e:00:00:03").up
    assert written_once(h, "p3")


@pytest.mark.timeout(300)
def test_watch_resumes_after_compaction(etcd, host):
    """History the agent has not seen is compacted away while it is cut off: it reads
    everything again instead of missing requests."""
    h = host
    h.pause_agent()
    etcd.stop(signal.SIGKILL)
    etcd.start()  # the agent's watch is gone, it has not noticed yet
    h.request_plug("p1", MAC1, 0)
    for i in range(5):
        h.etcd.put(f"{keys.ROOT}unrelated/{i}", "x")
    rev = etcd_run(h.endpoints, lambda e: e.revision())
    etcd_run(h.endpoints, lambda e: e.compact(rev))
    h.resume_agent()
    # The agent first has to find its old connection dead (gRPC keep-alive, then its back-off):
    # about 5 s on a quiet machine, 40-60 s seen at a load average of 11 on two cores.
    h.wait_up("p1", timeout=150)
    assert written_once(h, "p1")
    assert "compacted" in h.agent_log()
    assert h.table() == [("mac", MAC1, "ring:0")]


def test_spp_vf_restarted(bare_host, pool):
    h = bare_host
    assert h.plug("p1", MAC1).up and h.plug("p2", MAC2, vlan=100).up
    table, ops, wiring = h.table(), h.vlan_ops(), h.wiring()
    h.kill_worker("spp_vf-1")
    h.start_vf()  # comes back empty
    wait_for(lambda: h.table() == table, 30, "the agent to restore the ports")
    assert h.vlan_ops() == ops and h.wiring() == wiring
    assert written_once(h, "p1") and written_once(h, "p2")  # nothing was asked twice
    with guests(h.vdir, 0, 1) as vm:
        frames = frames_to(MAC1, 3)
        h.wire.send(frames)
        assert receive(pool, vm[0], 3) == frames


def test_spp_mirror_restarted_with_a_tap(bare_host, pool):
    h = bare_host
    assert h.plug("src", MAC1).up and h.plug("svc", MAC2).up
    assert etcd_run(h.endpoints, lambda e: tools.tap_create(e, "svc", "src", "IN", "tf1"))[1]
    wiring = h.wiring()
    h.kill_worker("spp_mirror-2")
    h.start_mirror()
    wait_for(lambda: h.wiring() == wiring, 30, "the agent to rewire the tap")
    with guests(h.vdir, 0, 1) as vm:
        frames = frames_to(MAC1, 3)
        h.wire.send(frames)
        assert receive(pool, vm[0], 3) == frames
        assert receive(pool, vm[1], 3) == frames


def test_garbage_in_the_keys_is_logged_and_skipped(host):
    h = host
    bad = {
        "badjson": ("{not json", keys.PLUG),
        "badmac": ('{"mac_address": "zz:16:3e:00:00:01", "vhost_id": 0}', keys.PLUG),
        "novhost": ('{"mac_address": "fa:16:3e:00:00:05", "vhost_id": 42}', keys.PLUG),
        "unclaimed": ('{"mac_address": "fa:16:3e:00:00:06", "vhost_id": 1}', keys.PLUG),
        "badaction": ('{"mac_address": "fa:16:3e:00:00:07", "vhost_id": 0}', "replug"),
        "badvlan": ('{"mac_address": "fa:16:3e:00:00:08", "vhost_id": 0, "vlan_id": 5000}', keys.PLUG),
    }
    for port, (bind, action) in bad.items():
        h.etcd.put(keys.key("bind_port", "h1", port), bind)
        h.etcd.put(keys.key("action", "h1", port), action)
    h.etcd.put(keys.key("tap_info", "h1", "tfbad"), "[]")
    h.etcd.put(keys.key("tap_action", "h1", "tfbad"), keys.PLUG)
    h.etcd.put(keys.key("action", "h1", "nobind"), keys.PLUG)
    # a good request after the garbage is carried out, by the same (living) agent
    assert h.plug("good", MAC1).up
    assert h.agent.poll() is None
    log = h.agent_log()
    for port in [*bad, "nobind"]:
        assert f"port {port}:" in log and "skipped" in log, port
        assert h.port_status(port) is None
    wait_for(
        lambda: "tap flow tfbad:" in h.agent_log(), 20, "the bad tap flow to be looked at"
    )  # taps come last
    assert h.table() == [("mac", MAC1, "ring:0")]
    # an unplug whose bind_port names another port's vhost leaves that port alone
    h.etcd.put(keys.key("bind_port", "h1", "thief"), '{"mac_address": "fa:16:3e:00:00:09", "vhost_id": 0}')
    h.etcd.put(keys.key("action", "h1", "thief"), keys.UNPLUG)
    h.wait_gone("thief")
    assert h.table() == [("mac", MAC1, "ring:0")]
    assert h.etcd.get(keys.vhost_key("h1", "phys1", 0)) == "good"
    # garbage on a restart, too: the agent starts and still serves
    h.stop_agent()
    h.start_agent()
    assert h.plug("good2", MAC2).up


def test_spp_ctl_restarted_with_a_request_pending(bare_host):
    """spp-ctl goes away (the secondaries keep forwarding and reconnect): a plug asked meanwhile
    is carried out once spp-ctl and the processes are back, and the plugged port stays."""
    h = bare_host
    assert h.plug("p1", MAC1).up
    ctl = h.bed.procs.pop("spp-ctl")
    ctl.kill()
    ctl.wait(10)
    h.request_plug("p2", MAC2, 1, vlan=100)
    wait_for(lambda: "spp-ctl" in h.agent_log().split("plugged port p1")[-1], 30, "the agent to notice")
    h.bed.start_ctl()
    wait_for(
        lambda: (
            {"type": "vf", "client-id": 1} in h.bed.processes()
            and {"type": "mirror", "client-id": 2} in h.bed.processes()
        ),
        30,
        "the secondaries to register again",
    )
    h.wait_up("p2", timeout=60)
    assert written_once(h, "p1") and written_once(h, "p2")
    assert h.table() == [("mac", MAC1, "ring:0"), ("vlan", f"100/{MAC2}", "ring:2")]


@pytest.mark.timeout(300)  # three etcd members and a whole host on a loaded machine
def test_any_member_of_an_etcd_cluster_may_fail(tmp_path):
    """Three etcd members; the one the agent uses is killed: the agent moves to another member,
    and requests written through the others are carried out; the member comes back."""
    from spp.integrations.testbed import free_port

    peers = [free_port() for _ in range(3)]
    cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(peers))
    members = [LocalEtcd(peer_port=p, name=f"m{i}", cluster=cluster) for i, p in enumerate(peers)]
    try:
        for m in members:
            m.start(wait=False)
        for m in members:
            m.wait_ready()
        endpoints = ",".join(m.endpoint for m in members)
        with AgentHost(endpoints, "h1", tmp_path) as h:
            h.start_agent()
            assert h.plug("p1", MAC1).up
            members[0].stop(signal.SIGKILL)  # the agent's member (first in its list)
            h.request_plug("p2", MAC2, 1)  # through another member (the test's client fails over)
            h.wait_up("p2", timeout=60)
            assert written_once(h, "p1") and written_once(h, "p2")
            members[0].start()
            members[1].stop(signal.SIGKILL)
            assert h.unplug("p1", wait=60)
            assert h.table() == [("mac", MAC2, "ring:2")]
            assert h.stop_agent() == 0
            assert "Traceback" not in h.agent_log()
    finally:
        for m in members:
            m.close()


def test_agent_killed_mid_tap_and_restarted(bare_host):
    """The state of an agent killed in the middle of wiring a tap's OUT direction (the source's
    forwarder already detached from its ring, the mirror not yet attached): the restarted agent
    finishes it, the status written once."""
    h = bare_host
    assert h.plug("src", MAC1).up and h.plug("svc", MAC2).up
    assert etcd_run(h.endpoints, lambda e: tools.tap_create(e, "svc", "src", "BOTH", "tf1"))[1]
    tapped = h.wiring()
    info = keys.TapInfo.parse(h.etcd.get(keys.key("tap_info", "h1", "tf1")))
    h.stop_agent(signal.SIGKILL)
    mirror = f"mirror_{info.mirror_out}"
    ring_b = tapped[mirror][0][0]  # the mirror's rx: the ring from the source VM's forwarder
    h.bed.vf(1).detach(ring_b, "tx", "forward_0_rx")
    h.bed.mirror(2).detach(ring_b, "rx", mirror)
    h.bed.mirror(2).detach("ring:1", "tx", mirror)
    h.etcd.delete(keys.key("tap_status", "h1", "tf1"))
    assert h.wiring() != tapped
    h.start_agent()
    wait_for(lambda: h.etcd.get(keys.key("tap_status", "h1", "tf1")) == keys.UP, 30, "the tap up again")
    assert h.wiring() == tapped
    assert h.etcd.kv(keys.key("tap_status", "h1", "tf1")).version == 1
    assert etcd_run(h.endpoints, lambda e: tools.tap_delete(e, "tf1", wait=30))


def test_taps_whose_keys_vanished_while_the_agent_was_down(host, pool):
    """Tap flow tf2's keys are deleted while the agent is down (by hand, or by a clean-up that
    went around it): the restarted agent takes its mirror's wiring down, so the service VM gets
    no more copies of what the source VM sends, and leaves the live tap tf1 as it was. A tap
    whose tap_info became unreadable keeps the wiring of the mirror claimed for it. tf2's mirror
    claim, which names a flow without keys, is freed after the grace, so a new tap can have it."""
    h = host
    assert h.plug("src", MAC1).up and h.plug("svc", MAC2).up
    assert etcd_run(h.endpoints, lambda e: tools.tap_create(e, "svc", "src", "IN", "tf1"))[1]
    only_in = h.wiring()
    assert etcd_run(h.endpoints, lambda e: tools.tap_create(e, "svc", "src", "OUT", "tf2"))[1]
    assert h.wiring() != only_in
    tf2_mirror = keys.TapInfo.parse(h.etcd.get(keys.key("tap_info", "h1", "tf2"))).mirror_out
    h.stop_agent()
    for kind in ("tap_info", "tap_action", "tap_status"):
        h.etcd.delete(keys.key(kind, "h1", "tf2"))
    h.start_agent(
        "--tap-claim-grace", "3"
    )  # ready once the data plane is built: the clean-up comes before that
    assert h.wiring() == only_in
    assert "took down the wiring of a tap flow that is gone" in h.agent_log()
    assert h.etcd.kv(keys.key("tap_status", "h1", "tf1")).version == 1
    with guests(h.vdir, 0, 1) as vm:
        into = frames_to(MAC1, 3)
        h.wire.send(into)
        assert receive(pool, vm[0], 3) == into
        assert receive(pool, vm[1], 3) == into  # tf1 still copies
        out = frames_to("02:00:00:00:00:09", 3, first=40)
        cap = h.wire.capture(3, timeout=10)
        send_from_guest(pool, vm[0], out)
        assert cap.frames() == out
        assert receive(pool, vm[1], 1, timeout=1) == []  # tf2 copies no more
    claim = keys.key("mirror", "h1", tf2_mirror)
    wait_for(lambda: h.etcd.get(claim) == keys.FREE, 30, "tf2's mirror claim to be freed")
    assert (
        f"mirror {tf2_mirror} was claimed by tap flow tf2, which has had no keys for 3 s: freed"
        in h.agent_log()
    )
    assert etcd_run(h.endpoints, lambda e: tools.tap_create(e, "svc", "src", "OUT", "tf3"))[1]
    assert h.etcd.get(claim) == "tf3"  # the live flow's claim stays
    assert etcd_run(h.endpoints, lambda e: tools.tap_delete(e, "tf3", wait=30))
    assert h.wiring() == only_in
    # unreadable tap_info: the mirror claimed for the flow in etcd is left wired
    h.stop_agent()
    h.etcd.put(keys.key("tap_info", "h1", "tf1"), "{not json")
    h.start_agent()
    assert h.etcd.get(keys.key("mirror", "h1", 0)) == "tf1"
    assert h.wiring() == only_in


@pytest.mark.timeout(300)
def test_the_tools_wait_goes_on_through_a_lost_member(tmp_path):
    """``port plug`` waits for ``up`` on one member; that member dies before the agent writes it
    (through another member): the wait moves on and still sees ``up``, instead of failing and
    leaving the CLI to retry a plug whose ``bind_port`` is already written."""
    import asyncio

    from spp.integrations.agent.etcd import Etcd, parse_endpoints
    from spp.integrations.testbed import free_port

    peers = [free_port() for _ in range(3)]
    cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(peers))
    members = [LocalEtcd(peer_port=p, name=f"m{i}", cluster=cluster) for i, p in enumerate(peers)]
    key = keys.key("port_status", "h1", "p1")

    async def scenario() -> tuple[bool, bool]:
        waiter = Etcd(parse_endpoints(",".join(m.endpoint for m in members)))
        writer = Etcd(parse_endpoints(",".join(m.endpoint for m in members[1:])))
        try:
            waiting = asyncio.ensure_future(waiter.wait_for_value(key, keys.UP, 120))
            await asyncio.sleep(1)
            members[0].stop(signal.SIGKILL)  # the waiter's member (first in its list)
            await asyncio.sleep(1)
            await writer.call_any(lambda e: e.put(key, keys.UP))
            up = await waiting
            gone = asyncio.ensure_future(tools.wait_gone(waiter, key, 120))
            await asyncio.sleep(0.5)
            await writer.call_any(lambda e: e.delete(key))
            return up, await gone
        finally:
            await waiter.close()
            await writer.close()

    try:
        for m in members:
            m.start(wait=False)
        for m in members:
            m.wait_ready()
        assert asyncio.run(scenario()) == (True, True)
    finally:
        for m in members:
            m.close()
