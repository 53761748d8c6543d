"""spp_mirror: the mirror component in worker threads of this process, then as a real process
(launched by the primary, driven over REST and the CLI), and across veth interfaces."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import pytest

from spp.engine.components import C_DROP, C_RX, C_TX, MIRROR_KINDS, ComponentManager, ConfigError
from spp.engine.portid import PortId
from spp.engine.ring import Ring
from spp.engine.shm import Segment
from spp.engine.vlan import ADD, VlanOp
from spp.integrations.testbed import Testbed, wait_for
from tests.netutil import is_root, make_frame, veth_pair_in_netns
from tests.test_vf_components import Wire


def ring(n: int) -> PortId:
    return PortId("ring", n)


def mixed(count: int) -> list[bytes]:
    return [make_frame(i, (60, 64, 128, 1514, 333)[i % 5]) for i in range(count)]


# -- in this process -------------------------------------------------------------------------------


@pytest.fixture
def seg(make_segment):
    return make_segment(nb_rings=4, nb_bufs=8192)


@pytest.fixture
def mgr(seg):
    m = ComponentManager(seg, 1, [0, 1], MIRROR_KINDS, process_name="spp_mirror")
    yield m
    m.close()


def test_both_outputs_get_the_stream_in_buffers_of_their_own(mgr, seg):
    mgr.start_component("mir", 1, "mirror")
    for uid, d in ((ring(0), "rx"), (ring(1), "tx")):
        mgr.attach(uid, d, "mir", None)
    w = Wire(seg)
    frames = mixed(200)
    w.push(0, frames)
    time.sleep(0.1)
    assert len(Ring(seg, 0)) == 200  # one tx port: not complete, not running
    mgr.attach(ring(2), "tx", "mir", None)
    r1, r2 = Ring(seg, 1), Ring(seg, 2)
    wait_for(lambda: len(r1) == 200 and len(r2) == 200, 5, "both outputs")
    b1, b2 = r1.dequeue(1024), r2.dequeue(1024)
    assert [w.pool.read(int(b)) for b in b1] == frames
    assert [w.pool.read(int(b)) for b in b2] == frames
    assert not set(b1.tolist()) & set(b2.tolist())  # deep copies: no buffer is shared
    w.pool.data[b2, :14] = 0xEE  # edit every copy ...
    assert [w.pool.read(int(b)) for b in b1] == frames  # ... and the originals do not change
    w.pool.free(b1)
    w.pool.free(b2)
    ctr = mgr.counters["mir"]
    assert (int(ctr[C_RX]), int(ctr[C_TX]), int(ctr[C_DROP])) == (200, 400, 0)
    with pytest.raises(ConfigError, match="at most 2 tx ports"):
        mgr.attach(ring(3), "tx", "mir", None)
    w.pool.close()


def test_a_dry_pool_costs_copies_not_originals_and_is_counted(make_segment):
    seg = make_segment(nb_rings=3, nb_bufs=1024)
    m = ComponentManager(seg, 1, [0, 1], MIRROR_KINDS)
    try:
        w = Wire(seg)
        frames = [make_frame(i, 64) for i in range(300)]
        w.push(0, frames)
        hog = w.pool.alloc(1024)  # leave the mirror (almost) nothing to copy into
        m.start_component("mir", 1, "mirror")
        for uid, d in ((ring(0), "rx"), (ring(1), "tx"), (ring(2), "tx")):
            m.attach(uid, d, "mir", None)
        wait_for(lambda: len(Ring(seg, 1)) == 300, 5, "the originals")
        ctr = m.counters["mir"]
        copies = len(Ring(seg, 2))
        assert int(ctr[C_DROP]) == 300 - copies > 0
        assert int(ctr[C_TX]) == 300 + copies
        w.pool.free(hog)
        assert w.take(1, 300) == frames
        w.pool.close()
    finally:
        m.close()


# -- as a process --------------------------------------------------------------------------------


@pytest.fixture
def bed():
    with Testbed(nb_rings=6) as b:
        yield b


def test_mirror_process_duplicates_and_copies_stay_independent(bed):
    """mirror 2 duplicates ring:0 to ring:1 and ring:2; vf 1 tags what leaves ring:1 and sends
    it to ring:3. The tag shows on that path only: the other output is a copy of its own."""
    w = Wire(Segment.attach(bed.prefix))
    mirror = bed.launch_mirror(2, lcores="0,1")
    vf = bed.launch_vf(1, lcores="0,1")
    mirror.start("mir", 1, "mirror")
    for port, d in (("ring:0", "rx"), ("ring:1", "tx"), ("ring:2", "tx")):
        mirror.attach(port, d, "mir")
    vf.start("tagger", 1, "forward")
    vf.attach("ring:1", "rx", "tagger")
    vf.attach("ring:3", "tx", "tagger", {"operation": "add", "id": 5, "pcp": 1})
    frames = mixed(500)
    w.push(0, frames)
    tag = bytes.fromhex("81002005")
    assert w.take(3, 500) == [f[:12] + tag + f[12:] for f in frames]
    assert w.take(2, 500) == frames
    comp = mirror.component("mir")
    assert comp["counters"] == {"rx": 500, "tx": 1000, "tx_drop": 0, "drop": 0}
    st = mirror.status()
    assert list(st) == ["client-id", "ports", "master-lcore", "components", "stats"]
    assert st["ports"] == ["ring:0", "ring:1", "ring:2"]
    assert [p["port"] for p in comp["tx_port"]] == ["ring:1", "ring:2"]
    w.pool.close()


def test_cli_mirror_status_errors_and_exit(bed):
    def spp(*commands: str) -> str:
        argv = [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}"]
        for c in commands:
            argv += ["-e", c]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return r.stdout + r.stderr

    out = spp(
        f"pri; launch mirror 3 -l 0,1 -- --client-id 3 -s 127.0.0.1:{bed.sec_port}",
        "mirror 3; component start mr1 1 mirror",
        "mirror 3; port add ring:0 rx mr1",
        "mirror 3; port add ring:1 tx mr1",
        "mirror 3; port add ring:2 tx mr1",
        "mirror 3; port add ring:3 tx mr1",
        "mirror 3; status",
    )
    assert "command error: error occur: component 'mr1' (mirror) takes at most 2 tx ports" in out
    assert (
        "Basic Information:\n"
        "  - client-id: 3\n"
        "  - ports: [ring:0, ring:1, ring:2]\n"
        "  - lcore_ids:\n"
        "    - master: 0\n"
        "    - slave: 1\n"
        "Components:\n"
        "  - core:1 'mr1' (type: mirror)\n"
        "    - rx: ring:0\n"
        "    - tx: [ring:1, ring:2]\n"
    ) in out
    out = spp("mirror 3; component stop mr1", "mirror 3; status", "mirror 3; exit")
    assert "  - core:1 '' (type: unuse)" in out and "Exit mirror 3." in out
    wait_for(lambda: {"type": "mirror", "client-id": 3} not in bed.processes(), 5, "mirror 3 to leave")


@pytest.mark.skipif(not is_root(), reason="needs root for network namespaces and veth")
def test_duplicate_recipe_across_interfaces():
    """SPP's spp_mirror "duplicate" recipe: phy:0 rx, phy:1 and phy:2 tx."""
    with contextlib.ExitStack() as stack:
        a, b, c = (stack.enter_context(veth_pair_in_netns()) for _ in range(3))
        with Testbed(ifaces=[a.host_if, b.host_if, c.host_if], nb_rings=1) as bed:
            mirror = bed.launch_mirror(1, lcores="0,1")
            mirror.start("mir", 1, "mirror")
            for port, d in (("phy:0", "rx"), ("phy:1", "tx"), ("phy:2", "tx")):
                mirror.attach(port, d, "mir")
            frames = mixed(100)
            with b.capture(100, timeout=10) as cap_b, c.capture(100, timeout=10) as cap_c:
                a.send(frames)
                assert cap_b.frames() == frames
                assert cap_c.frames() == frames
            phys = bed.primary_status()["phy_ports"]
            assert phys[1]["tx"] == phys[2]["tx"] == 100


def test_vlan_option_on_a_mirror_port_edits_one_output_only(mgr, seg):
    """Not in SPP (its mirror ignored VLAN options): with deep copies, a tag pushed on one output
    port is on that output only."""
    mgr.start_component("mir", 1, "mirror")
    mgr.attach(ring(0), "rx", "mir", None)
    mgr.attach(ring(1), "tx", "mir", VlanOp(ADD, 9, 0))
    mgr.attach(ring(2), "tx", "mir", None)
    w = Wire(seg)
    frames = mixed(50)
    w.push(0, frames)
    assert w.take(1, 50) == [f[:12] + bytes.fromhex("81000009") + f[12:] for f in frames]
    assert w.take(2, 50) == frames
    w.pool.close()
