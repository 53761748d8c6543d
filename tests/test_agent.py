"""spp-agent on a real etcd with real spp-ctl, primary, spp_vf (vhost ports in client mode) and
spp_mirror: plug and unplug, flat and VLAN, and TaaS, checked in spp-ctl's status, in etcd, and
by frames reaching the port's vhost (virtio-user "VMs" of the test) or the wire. The tests share
one host (``bare_host``: each starts from the host as built, which also checks that the previous
one's unplugs and tap deletions left nothing behind)."""

from __future__ import annotations

import pytest

from spp.integrations.agent import keys, tools
from spp.integrations.testbed import wait_for
from tests.agentbed import AgentHost, drain, etcd_run, frames_to, guests, receive, send_from_guest
from tests.netutil import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root for network namespaces and veth")

MAC1, MAC2 = "fa:16:3e:00:00:01", "fa:16:3e:00:00:02"


def untag(frame: bytes) -> bytes:
    return frame[:12] + frame[16:]


def tag(frame: bytes, vid: int) -> bytes:
    return frame[:12] + bytes.fromhex("8100") + vid.to_bytes(2, "big") + frame[12:]


def classifier_drops(h: AgentHost) -> int:
    comp = next(c for c in h.vf_status()["components"] if c.get("name") == "classifier")
    return comp["counters"]["drop"]


def test_plug_unplug_flat_and_vlan(bare_host, pool):
    h = bare_host
    base_wiring = h.wiring()
    r1 = h.plug("p1", MAC1)
    r2 = h.plug("p2", MAC2, vlan=100)
    assert r1.up and r2.up
    assert r1.vif()["vif_type"] == "vhostuser"
    assert r1.vif()["vif_details"]["vhostuser_socket"] == "/tmp/sock0"
    assert (r1.vhost_id, r2.vhost_id) == (0, 1)
    # spp-ctl: one entry per port, the VLAN one with its tag handling on vhost 1's rings only
    assert h.table() == [("mac", MAC1, "ring:0"), ("vlan", f"100/{MAC2}", "ring:2")]
    assert h.vlan_ops() == {("merger", "rx", "ring:3"): "add:100", ("classifier", "tx", "ring:2"): "del"}
    # etcd: the driver's view
    assert h.etcd.get(keys.vhost_key("h1", "phys1", 0)) == "p1"
    assert h.etcd.kv(keys.key("port_status", "h1", "p1")).version == 1  # written once
    with guests(h.vdir, 0, 1) as vm:
        # from the wire to each VM: flat as is, VLAN 100 untagged
        flat, tagged = frames_to(MAC1, 5), frames_to(MAC2, 5, vlan=100, first=10)
        h.wire.send(flat + tagged)
        assert receive(pool, vm[0], 5) == flat
        assert receive(pool, vm[1], 5) == [untag(f) for f in tagged]
        # from each VM to the wire: VLAN 100 tagged on the way out
        cap = h.wire.capture(2, timeout=10)
        out0, out1 = frames_to("02:00:00:00:00:09", 2, first=20)
        send_from_guest(pool, vm[0], [out0])
        send_from_guest(pool, vm[1], [out1])
        got = sorted(cap.frames())
        assert got == sorted([out0, tag(out1, 100)])
        # unplug: the keys go, the vhosts are free, nothing reaches the VM any more (the
        # classifier, still running for p2, drops what is for p1)
        assert h.unplug("p1")
        assert h.table() == [("vlan", f"100/{MAC2}", "ring:2")]
        drops = classifier_drops(h)
        h.wire.send(frames_to(MAC1, 3, first=30))
        wait_for(lambda: classifier_drops(h) >= drops + 3, 10, "the classifier to drop the frames")
        assert [f for f in drain(pool, vm[0]) if f[6:12] == flat[0][6:12]] == []
        assert h.unplug("p2")
        assert h.table() == [] and h.vlan_ops() == {}
        assert h.wiring() == base_wiring
    left = h.host_keys()
    assert not [k for k in left if "/p1" in k or "/p2" in k], left
    assert h.etcd.get(keys.vhost_key("h1", "phys1", 0)) == keys.FREE
    assert h.etcd.get(keys.vhost_key("h1", "phys1", 1)) == keys.FREE


def test_replug_after_unplug_and_no_free_vhost(bare_host):
    h = bare_host
    assert h.plug("p1", MAC1).up and h.plug("p2", MAC2).up
    with pytest.raises(Exception, match="no free vhost"):
        h.plug("p3", "fa:16:3e:00:00:03")
    assert h.unplug("p1")
    r = h.plug("p3", "fa:16:3e:00:00:03", vlan=7)
    assert r.up and r.vhost_id == 0
    assert h.table() == [("mac", MAC2, "ring:2"), ("vlan", "7/fa:16:3e:00:00:03", "ring:0")]
    # the agent's liveness: there while it runs, gone as soon as it stopped (its lease revoked,
    # not left to expire), and then a plug is refused before it claims anything
    assert h.etcd.get(keys.agent_key("h1")) is not None
    assert h.unplug("p2")
    assert h.stop_agent() == 0
    assert h.etcd.get(keys.agent_key("h1")) is None
    with pytest.raises(tools.ToolError, match="no spp-agent is alive on host h1"):
        h.plug("p4", "fa:16:3e:00:00:04", timeout=600)
    assert h.etcd.get(keys.vhost_key("h1", "phys1", 1)) == keys.FREE
    assert h.etcd.get(keys.key("bind_port", "h1", "p4")) is None


@pytest.mark.parametrize("direction", ["IN", "OUT", "BOTH"])
def test_taas(bare_host, pool, direction):
    """A tap flow copies the source port's traffic (from the wire: IN; from its VM: OUT) to the
    service port's VM; deleting it restores the wiring and frees the mirrors."""
    h = bare_host
    assert h.plug("src", MAC1).up and h.plug("svc", MAC2).up
    base_wiring = h.wiring()
    flow, up = etcd_run(h.endpoints, lambda e: tools.tap_create(e, "svc", "src", direction, "tf1"))
    assert up and flow == "tf1"
    mirrors = h.etcd.prefix(keys.host_prefix("mirror", "h1"))
    info = keys.TapInfo.parse(h.etcd.get(keys.key("tap_info", "h1", "tf1")))
    assert sum(v == "tf1" for v in mirrors.values()) == (2 if direction == "BOTH" else 1)
    with guests(h.vdir, 0, 1) as vm:
        if direction in ("IN", "BOTH"):
            assert info.mirror_in is not None
            into = frames_to(MAC1, 4)
            h.wire.send(into)
            assert receive(pool, vm[0], 4) == into  # the source VM still gets its frames
            assert receive(pool, vm[1], 4) == into  # and the service VM a copy
        if direction in ("OUT", "BOTH"):
            assert info.mirror_out is not None
            out = frames_to("02:00:00:00:00:09", 3, first=40)
            cap = h.wire.capture(3, timeout=10)
            send_from_guest(pool, vm[0], out)
            assert cap.frames() == out  # to the wire as before
            assert receive(pool, vm[1], 3) == out  # and a copy to the service VM
        assert etcd_run(h.endpoints, lambda e: tools.tap_delete(e, "tf1", wait=30))
        assert h.wiring() == base_wiring
        h.wire.send(frames_to(MAC1, 2, first=50))
        assert len(receive(pool, vm[0], 2)) == 2
        assert [f for f in drain(pool, vm[1]) if f[12:14] == b"\x88\xb5"] == []
    assert set(h.etcd.prefix(keys.host_prefix("mirror", "h1")).values()) == {keys.FREE}
    assert not [k for k in h.host_keys() if "tf1" in k]


def test_unplugging_a_tapped_port_takes_the_tap_down(bare_host):
    h = bare_host
    assert h.plug("src", MAC1).up and h.plug("svc", MAC2).up
    base_wiring = h.wiring()
    assert etcd_run(h.endpoints, lambda e: tools.tap_create(e, "svc", "src", "BOTH", "tf2"))[1]
    assert h.wiring() != base_wiring
    assert h.unplug("src")
    assert not [k for k in h.host_keys() if "tf2" in k or "/src" in k]
    assert set(h.etcd.prefix(keys.host_prefix("mirror", "h1")).values()) == {keys.FREE}
    w = h.wiring()
    assert w == base_wiring
