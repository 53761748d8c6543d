"""spp_vf end to end: spp-ctl, the primary and spp_vf as real processes (launched by the primary),
driven over REST and through the CLI, with frames pushed into and taken out of the shared rings
by this test (it is the only producer of the rings it feeds and the only consumer of those it
reads)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spp.engine.shm import Segment
from spp.integrations.testbed import Testbed, wait_for
from tests.netutil import make_frame
from tests.test_vf_components import Wire

MAC_A, MAC_B = bytes.fromhex("525400123456"), bytes.fromhex("525400123458")
BCAST = b"\xff" * 6
UNKNOWN = bytes.fromhex("020000000099")
NULL_DST = "02:00:00:00:00:02"  # where nullpmd's frames go


def tag(vid: int, pcp: int = 0) -> tuple[int, int]:
    return (0x8100, (pcp << 13) | vid)


def tagged(frame: bytes, vid: int, pcp: int = 0) -> bytes:
    return frame[:12] + bytes.fromhex("8100") + ((pcp << 13) | vid).to_bytes(2, "big") + frame[12:]


def untagged(frame: bytes) -> bytes:
    return frame[:12] + frame[16:]


@pytest.fixture
def bed():
    with Testbed(nb_rings=8) as b:
        yield b


@pytest.fixture
def wire(bed):
    w = Wire(Segment.attach(bed.prefix))
    yield w
    w.pool.close()


def worker_pid(bed: Testbed, module: str, client_id: int) -> int:
    """The pid of a secondary the primary launched."""
    primary = bed.pids()["spp-primary"]
    for child in Path(f"/proc/{primary}/task/{primary}/children").read_text().split():
        cmd = Path(f"/proc/{child}/cmdline").read_text().split("\0")
        if module in cmd and cmd[cmd.index("--client-id") + 1] == str(client_id):
            return int(child)
    raise AssertionError(f"no {module} {client_id} child of the primary")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spp(bed: Testbed, *commands: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}"]
    for c in commands:
        argv += ["-e", c]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_classifier_steers_by_mac_and_vlan_pushes_and_strips_tags(bed, wire):
    vf = bed.launch_vf(1, lcores="0,1")
    assert {"type": "vf", "client-id": 1} in bed.processes()  # registered before launch answered
    vf.start("cls", 1, "classifier")
    vf.attach("ring:0", "rx", "cls")
    vf.attach("ring:1", "tx", "cls", {"operation": "add", "id": 100, "pcp": 3})
    vf.attach("ring:2", "tx", "cls", {"operation": "del"})
    vf.attach("ring:3", "tx", "cls")
    vf.table_add("52:54:00:12:34:56", "ring:1")
    vf.table_add("52:54:00:12:34:58", "ring:2", vlan=200)
    vf.table_add("default", "ring:3")
    a = make_frame(0, 64, dst=MAC_A)
    b = make_frame(1, 300, dst=MAC_B, vlan=tag(200, 5))
    unknown = make_frame(2, 64, dst=UNKNOWN)
    bcast = make_frame(3, 80, dst=BCAST)
    b_untagged = make_frame(4, 64, dst=MAC_B)  # MAC_B is only known in VLAN 200
    a_tagged = make_frame(5, 1514, dst=MAC_A, vlan=tag(7))  # VLAN 7 has no table
    wire.push(0, [a, b, unknown, bcast, b_untagged, a_tagged])
    assert wire.take(1, 2) == [tagged(a, 100, 3), tagged(bcast, 100, 3)]
    assert wire.take(2, 1) == [untagged(b)]
    assert wire.take(3, 4) == [unknown, bcast, b_untagged, a_tagged]
    comp = vf.component("cls")
    assert comp["counters"] == {"rx": 6, "tx": 7, "tx_drop": 0, "drop": 0}
    rings = bed.primary_status()["ring_ports"]
    assert rings[0]["rx"] == 6 and [rings[n]["tx"] for n in (1, 2, 3)] == [2, 1, 4]
    assert vf.status()["classifier_table"] == [
        {"type": "mac", "value": "default", "port": "ring:3"},
        {"type": "mac", "value": "52:54:00:12:34:56", "port": "ring:1"},
        {"type": "vlan", "value": "200/52:54:00:12:34:58", "port": "ring:2"},
    ]
    # Running, but nothing arrives: the worker naps instead of spinning.
    pid = worker_pid(bed, "spp.processes.vf", 1)
    time.sleep(0.3)
    c0 = cpu_seconds(pid)
    time.sleep(1.5)
    assert cpu_seconds(pid) - c0 < 0.2


def test_recipe_classify_forward_merge_and_teardown(bed, wire):
    """SPP's classify_icmp recipe over rings: cls -> fwd1/fwd2 -> mgr, then its teardown."""
    vf = bed.launch_vf(1, lcores="0-2")
    for name, core, kind in (("cls", 1, "classifier"), ("fwd1", 2, "forward"), ("fwd2", 2, "forward")):
        vf.start(name, core, kind)
    vf.start("mgr", 2, "merge")
    wiring = [
        ("ring:0", "rx", "cls"),
        ("ring:1", "tx", "cls"),
        ("ring:2", "tx", "cls"),
        ("ring:1", "rx", "fwd1"),
        ("ring:3", "tx", "fwd1"),
        ("ring:2", "rx", "fwd2"),
        ("ring:4", "tx", "fwd2"),
        ("ring:3", "rx", "mgr"),
        ("ring:4", "rx", "mgr"),
        ("ring:5", "tx", "mgr"),
    ]
    for port, d, name in wiring:
        vf.attach(port, d, name)
    vf.table_add("52:54:00:12:34:56", "ring:1")
    vf.table_add("52:54:00:12:34:58", "ring:2")
    frames = [make_frame(i, 64 + i % 50, dst=(MAC_A, MAC_B)[i % 2]) for i in range(400)]
    wire.push(0, frames)
    got = wire.take(5, 400)
    assert sorted(got) == sorted(frames)
    for mac in (MAC_A, MAC_B):  # each path keeps its order
        assert [f for f in got if f[:6] == mac] == [f for f in frames if f[:6] == mac]
    assert [c["counters"]["rx"] for c in vf.status()["components"]] == [400, 200, 200, 400]

    for mac, port in (("52:54:00:12:34:56", "ring:1"), ("52:54:00:12:34:58", "ring:2")):
        vf.table_del(mac, port)
    for port, d, name in wiring:
        vf.detach(port, d, name)
    for name in ("cls", "fwd1", "fwd2", "mgr"):
        vf.stop(name)
    st = vf.status()
    assert st["classifier_table"] == []
    assert st["components"] == [{"core": 1, "type": "unuse"}, {"core": 2, "type": "unuse"}]
    assert st["ports"] == [f"ring:{n}" for n in range(6)]


def test_rewiring_a_classifier_under_traffic_counts_every_packet(bed):
    """nfv 1 feeds ring:0 from a null source; the classifier sends nullpmd's MAC to ring:1 and
    everything else to ring:2; nfv 2 drains both. The MAC entry and the port come and go 12
    times under traffic; in the end every packet the classifier received was sent or counted."""
    nfv1, nfv2 = bed.launch_nfv(1, lcores="0,1"), bed.launch_nfv(2, lcores="0,1")
    vf = bed.launch_vf(3, lcores="0,1", main_lcore=1)  # its worker on lcore 0, the nfvs' on 1
    vf.start("cls", 0, "classifier")
    for port, d in (("ring:0", "rx"), ("ring:1", "tx"), ("ring:2", "tx")):
        vf.attach(port, d, "cls")
    vf.table_add(NULL_DST, "ring:1")
    vf.table_add("default", "ring:2")
    for p in ("ring:1", "ring:2", "nullpmd:1"):
        nfv2.add(p)
    nfv2.patch("ring:1", "nullpmd:1")
    nfv2.patch("ring:2", "nullpmd:1")
    nfv2.forward()
    nfv1.add("nullpmd:0")
    nfv1.add("ring:0")
    nfv1.patch("nullpmd:0", "ring:0")
    nfv1.forward()
    for i in range(12):
        if i % 2:
            vf.attach("ring:1", "tx", "cls")
            vf.table_add(NULL_DST, "ring:1")
        else:
            vf.table_del(NULL_DST, "ring:1")
            vf.detach("ring:1", "tx", "cls")
        time.sleep(0.03)
    nfv1.stop()
    wait_for(lambda: bed.ring_stats(0)["rx"] == bed.ring_stats(0)["tx"], 10, "the classifier to drain ring:0")
    time.sleep(0.2)
    nfv2.stop()
    c = vf.component("cls")["counters"]
    rings = bed.primary_status()["ring_ports"]
    assert c["rx"] == rings[0]["rx"] > 10_000
    assert c["rx"] == c["tx"] + c["tx_drop"] + c["drop"]
    assert c["drop"] == 0  # there always was a destination: nothing lost to the switching
    assert (
        c["tx"] == rings[1]["tx"] + rings[2]["tx"]
        and c["tx_drop"] == rings[1]["tx_drop"] + rings[2]["tx_drop"]
    )
    assert rings[1]["tx"] > 0 and rings[2]["tx"] > 0


def test_bad_requests_are_clear_400s_and_traffic_keeps_flowing(bed):
    vf = bed.launch_vf(1, lcores="0,1")
    nfv = bed.launch_nfv(2, lcores="0,1")
    vf.start("fwd", 1, "forward")
    vf.attach("ring:0", "rx", "fwd")
    vf.attach("ring:1", "tx", "fwd")
    for p in ("nullpmd:0", "ring:0", "ring:1", "nullpmd:1"):
        nfv.add(p)
    nfv.patch("nullpmd:0", "ring:0")
    nfv.patch("ring:1", "nullpmd:1")
    nfv.forward()
    wait_for(lambda: vf.component("fwd")["counters"]["tx"] > 0, 10, "traffic through the forwarder")
    base = "/v1/vfs/1"
    cases = [
        ("POST", f"{base}/components", {"name": "fwd", "core": 1, "type": "merge"}, "component name"),
        ("POST", f"{base}/components", {"name": "x", "core": 0, "type": "merge"}, "master lcore"),
        ("POST", f"{base}/components", {"name": "x", "core": 9, "type": "merge"}, "not one of this"),
        (
            "PUT",
            f"{base}/components/nope/ports",
            {"action": "attach", "port": "ring:2", "dir": "rx"},
            "no component",
        ),
        (
            "PUT",
            f"{base}/components/fwd/ports",
            {"action": "attach", "port": "ring:2", "dir": "tx"},
            "at most 1 tx",
        ),
        (
            "PUT",
            f"{base}/components/fwd/ports",
            {"action": "attach", "port": "ring:99", "dir": "tx"},
            "ring:99",
        ),
        (
            "PUT",
            f"{base}/components/fwd/ports",
            {"action": "attach", "port": "pcap:0", "dir": "tx"},
            "phy, ring and vhost ports only",
        ),
        (
            "PUT",
            f"{base}/components/fwd/ports",
            {"action": "detach", "port": "ring:3", "dir": "tx"},
            "is not a tx",
        ),
        (
            "PUT",
            f"{base}/classifier_table",
            {"action": "add", "type": "mac", "mac_address": "52:54:00:12:34:56", "port": "ring:1"},
            "not a tx port of any classifier",
        ),
    ]
    for method, path, body, text in cases:
        r = bed.request(method, path, body)
        assert r.status_code == 400 and r.text.startswith("command error: ") and text in r.text, (
            body,
            r.text,
        )
    before = vf.component("fwd")["counters"]["tx"]
    wait_for(lambda: vf.component("fwd")["counters"]["tx"] > before + 10_000, 10, "traffic to keep flowing")
    comp = vf.component("fwd")
    assert [p["port"] for p in comp["rx_port"] + comp["tx_port"]] == ["ring:0", "ring:1"]


def test_cli_status_of_a_real_vf_and_exit_releases_everything(bed, wire):
    r = spp(
        bed,
        f"pri; launch vf 4 -l 0,1 -- --client-id 4 -s 127.0.0.1:{bed.sec_port}",
        "vf 4; component start fwd1 1 forward",
        "vf 4; port add ring:0 rx fwd1 add_vlantag 101 3",
        "vf 4; port add ring:1 tx fwd1",
        "vf 4; status",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Succeeded to start component 'fwd1' on core:1" in r.stdout
    assert (
        "Basic Information:\n"
        "  - client-id: 4\n"
        "  - ports: [ring:0, ring:1]\n"
        "  - lcore_ids:\n"
        "    - master: 0\n"
        "    - slaves: [1]\n"
        "Classifier Table:\n"
        "  No entries.\n"
        "Components:\n"
        "  - core:1 'fwd1' (type: forward)\n"
        "    - rx: ring:0 (vlan operation: add, id: 101, pcp: 3)\n"
        "    - tx: ring:1\n"
    ) in r.stdout
    r = spp(bed, "vf 4; port add ring:0 rx fwd9")
    assert "command error: Invalid value (component name): no component 'fwd9'" in r.stdout + r.stderr

    frames = [make_frame(i, 64) for i in range(100)]
    wire.push(0, frames)
    assert wire.take(1, 100) == [tagged(f, 101, 3) for f in frames]
    r = spp(bed, "vf 4; exit")
    assert "Exit vf 4." in r.stdout
    wait_for(lambda: {"type": "vf", "client-id": 4} not in bed.processes(), 5, "vf 4 to leave")
    seg = wire.seg
    wait_for(lambda: seg.process_state(4)[1] == 0, 5, "the slot of vf 4 to be released")
    wire.pool.flush()
    assert seg.pool_ctl[0] == seg.spec.nb_bufs  # its workers' pool caches came back
    vf = bed.launch_vf(4, lcores="0,1")  # and the id can be used again
    assert vf.status()["components"] == [{"core": 1, "type": "unuse"}]


def test_classifier_mac_the_old_type_name_starts_a_classifier(bed):
    """networking-spp's agent asks for ``classifier_mac`` (SPP 18.08's name): spp-ctl takes it and
    the component runs, and shows, as ``classifier``."""
    vf = bed.launch_vf(1, lcores="0-1")
    vf.start("cls", 1, "classifier_mac")
    (comp,) = [c for c in vf.status()["components"] if c.get("name") == "cls"]
    assert comp["type"] == "classifier"
