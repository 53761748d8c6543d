"""Process lifecycle that scripts can rely on: exit, relaunch, failed launches, a primary
without a forwarder lcore. Real spp-ctl, primary and secondaries, driven over REST."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest

from spp.engine.ring import Ring
from spp.engine.shm import P_START, STATE_FREE, Segment, pid_alive, segment_path
from spp.integrations.testbed import Testbed, free_port, launch_pcap, wait_for
from spp.processes.options import parse_eal
from tests.ctl_doubles import CtlServer, FakeProcess

CYCLES = 20


@pytest.fixture
def bed():
    with Testbed(nb_rings=4) as b:
        yield b


def launch_body(bed: Testbed, kind: str, client_id: int, **app: Any) -> dict[str, Any]:
    id_opt = "-n" if kind == "nfv" else "--client-id"
    return {
        "proc_name": f"spp_{kind}",
        "client_id": client_id,
        "eal": {"-l": "0,1", "--proc-type": "secondary", "--file-prefix": bed.prefix},
        "app": {id_opt: str(client_id), "-s": f"127.0.0.1:{bed.sec_port}", **app},
    }


@pytest.mark.parametrize("kind", ["nfv", "vf", "mirror", "pcap"])
def test_delete_then_relaunch_same_id(bed, kind, tmp_path):
    """DELETE returns once the process is gone: relaunching the id right after always works."""
    for cycle in range(CYCLES):
        if kind == "pcap":
            launch_pcap(bed, 3, "ring:0", tmp_path)
        else:
            r = bed.request("PUT", "/v1/primary/launch", launch_body(bed, kind, 3))
            assert r.status_code == 204, f"cycle {cycle}: {r.status_code} {r.text}"
        assert {"type": kind, "client-id": 3} in bed.processes()
        r = bed.request("DELETE", f"/v1/{kind}s/3")
        assert r.status_code == 204, f"cycle {cycle}: {r.status_code} {r.text}"
        assert {"type": kind, "client-id": 3} not in bed.processes()


def test_primary_with_one_lcore_adds_rings(bed):
    """``-l 0``: no forwarder, but ``add ring:N`` / ``del ring:N`` work as in SPP's primary."""
    assert bed.primary_lcores == "0"
    bed.ok("PUT", "/v1/primary/ports", {"action": "add", "port": "ring:1"})
    bed.ok("PUT", "/v1/primary/ports", {"action": "add", "port": "ring:2"})
    bed.ok("PUT", "/v1/primary/patches", {"src": "ring:1", "dst": "ring:2"})
    r = bed.request("PUT", "/v1/primary/ports", {"action": "add", "port": "ring:9"})
    assert r.status_code == 400 and "ring:9 does not exist" in r.text
    r = bed.request("PUT", "/v1/primary/forward", {"action": "start"})
    assert r.status_code == 400 and "no forwarder lcore" in r.text
    bed.ok("PUT", "/v1/primary/ports", {"action": "del", "port": "ring:2"})
    # A secondary uses the same ring meanwhile.
    nfv = bed.launch_nfv(1)
    nfv.add("ring:1")
    assert "ring:1" in nfv.status()["ports"]


# -- launches that fail ------------------------------------------------------------------------


@pytest.fixture
def quick_bed():
    """A primary that gives a launched secondary 3 s to register."""
    with Testbed(nb_rings=2, extra_primary_args=["--launch-timeout", "3"]) as b:
        yield b


def pid_in(message: str) -> int:
    match = re.search(r"\(pid (\d+)\)", message)
    assert match, message
    return int(match.group(1))


def test_launch_of_a_secondary_that_exits_reports_its_error(quick_bed):
    bed = quick_bed
    r = bed.request("PUT", "/v1/primary/launch", launch_body(bed, "nfv", 4, **{"--burst": "abc"}))
    assert r.status_code == 400, r.text
    assert "exited with status 2 before registering" in r.text and "invalid int value: 'abc'" in r.text
    assert not pid_alive(pid_in(r.text))
    bed.ok("PUT", "/v1/primary/launch", launch_body(bed, "nfv", 4))  # the id is free


def test_launch_that_cannot_reach_spp_ctl_reports_why(quick_bed):
    bed = quick_bed
    body = launch_body(bed, "vf", 4, **{"-s": f"127.0.0.1:{free_port()}"})
    r = bed.request("PUT", "/v1/primary/launch", body)
    assert r.status_code == 400 and "cannot reach spp-ctl at 127.0.0.1:" in r.text, r.text
    assert not pid_alive(pid_in(r.text))


def test_launch_that_never_registers_is_killed_and_blocks_nothing(quick_bed):
    """The secondary connects to something that never asks for its id: the primary kills it after
    its launch timeout, spp-ctl answers with the reason, and meanwhile everything else answers."""
    bed = quick_bed
    bed.launch_nfv(1)
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        body = launch_body(bed, "mirror", 5, **{"-s": f"127.0.0.1:{mute.getsockname()[1]}"})
        result: dict[str, httpx.Response] = {}
        pending = threading.Thread(
            target=lambda: result.update(r=bed.request("PUT", "/v1/primary/launch", body))
        )
        pending.start()
        try:
            wait_for(lambda: "spp_mirror-5.log" in os.listdir(bed.log_dir), 10, "the launch to start")
            # While the launch is pending, the primary and the process list answer.
            assert {"type": "nfv", "client-id": 1} in bed.processes()
            assert bed.primary_status()["lcores"] == [0]
            bed.nfv(1).add("ring:0")
            assert pending.is_alive()
        finally:
            pending.join(30)
    r = result["r"]
    assert r.status_code == 400, r.text
    assert "did not register with spp-ctl within 3 s and was stopped" in r.text
    assert not pid_alive(pid_in(r.text))
    bed.launch_mirror(5)  # the id is free


def test_unknown_options_are_refused_naming_them(bed):
    body = launch_body(bed, "nfv", 6)
    body["eal"]["--no-such-eal"] = "1"
    r = bed.request("PUT", "/v1/primary/launch", body)
    assert r.status_code == 400 and "'--no-such-eal'" in r.text
    r = bed.request("PUT", "/v1/primary/launch", launch_body(bed, "vf", 6, **{"--vhost": None}))
    assert r.status_code == 400 and "'--vhost'" in r.text
    assert {"type": "primary"} in bed.processes() and len(bed.processes()) == 1


@pytest.mark.parametrize(
    ("module", "argv", "named"),
    [
        ("nfv", ["-l", "0,1", "--no-such-eal", "--", "-n", "1"], "unknown EAL option '--no-such-eal'"),
        ("nfv", ["-l", "0,1", "stray", "--", "-n", "1"], "unexpected EAL argument 'stray'"),
        ("nfv", ["-l", "0,1", "--", "-n", "1", "--vhost"], "unrecognized arguments: --vhost"),
        ("vf", ["-l", "0,1", "--", "--client-id", "1", "--bogus"], "unrecognized arguments: --bogus"),
        ("pcap", ["-l", "0,1", "--lcore=1", "--", "--client-id", "1", "-c", "ring:0"], "'--lcore'"),
        ("primary", ["-l", "0", "--", "-n", "1", "--nb-buf", "9"], "unrecognized arguments: --nb-buf"),
    ],
)
def test_unknown_options_on_the_command_line(module, argv, named):
    r = subprocess.run(
        [sys.executable, "-m", f"spp.processes.{module}", "--file-prefix", "lifecycle-none", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and named in r.stderr, r.stderr
    assert not segment_path("lifecycle-none").exists()


def test_dpdk_options_that_mean_nothing_here_are_accepted():
    eal = parse_eal(
        ["-l0-2", "-n", "4", "--no-pci", "--socket-mem=512,512", "--huge-unlink=always", "-a", "0000:01:00.0",
         "--main-lcore", "1", "--in-memory", "--syslog", "--file-prefix=x"]
    )  # fmt: skip
    assert (eal.lcores, eal.file_prefix) == ([1, 0, 2], "x")


# -- the primary's death -------------------------------------------------------------------------


def kill_primary(bed: Testbed) -> None:
    primary = bed.procs["spp-primary"]
    os.kill(primary.pid, signal.SIGKILL)
    primary.wait(10)
    wait_for(lambda: {"type": "primary"} not in bed.processes(), 10, "spp-ctl to drop the primary")


def nfv_counter(nfv: Any, port: str, key: str) -> int:
    return int(nfv.port_stats()[port][key])


def run_primary(bed: Testbed, *app: str) -> subprocess.CompletedProcess[str]:
    """Run a second primary on the bed's prefix to completion (it is expected to refuse)."""
    argv = [sys.executable, "-m", "spp.processes.primary", "-l", "0", "--file-prefix", bed.prefix, "--"]
    argv += ["-s", f"127.0.0.1:{free_port()}", *app]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_traffic_survives_the_primary_and_a_new_primary_adopts_the_segment(bed):
    nfv = bed.launch_nfv(1)
    for port in ("nullpmd:0", "ring:0", "nullpmd:1"):
        nfv.add(port)
    nfv.patch("nullpmd:0", "ring:0")
    nfv.patch("ring:0", "nullpmd:1")
    nfv.forward()
    wait_for(lambda: nfv_counter(nfv, "nullpmd:1", "tx") > 0, 10, "traffic through ring:0")

    kill_primary(bed)
    # Forwarding goes on, the nfv stays registered, what needs the primary says it is missing.
    before = nfv_counter(nfv, "nullpmd:1", "tx")
    wait_for(lambda: nfv_counter(nfv, "nullpmd:1", "tx") > before, 10, "traffic without the primary")
    assert {"type": "nfv", "client-id": 1} in bed.processes()
    r = bed.request("GET", "/v1/primary/status")
    assert r.status_code == 404 and r.text == "primary not found."
    assert segment_path(bed.prefix).exists()

    # A primary that would lay the segment out differently refuses, naming who uses it.
    refused = run_primary(bed, "-n", str(bed.nb_rings + 1))
    assert refused.returncode == 1
    assert "still used by nfv 1" in refused.stderr and f"{bed.nb_rings} rings" in refused.stderr

    # The same options take it over: same pool, counters move on, launching works again.
    bed.start_primary()
    assert "took over the segment" in bed.log("spp-primary")
    ring_tx = bed.ring_stats(0)["tx"]
    wait_for(lambda: bed.ring_stats(0)["tx"] > ring_tx, 10, "ring:0 counters after the takeover")
    bed.launch_nfv(2)

    # Everyone leaves: the last one out removes the segment.
    for path in ("/v1/nfvs/1", "/v1/nfvs/2", "/v1/primary"):
        bed.ok("DELETE", path)
    assert not segment_path(bed.prefix).exists()


def test_secondaries_outlive_a_primary_that_exits(bed):
    nfv = bed.launch_nfv(1)
    bed.ok("DELETE", "/v1/primary")
    assert segment_path(bed.prefix).exists()
    nfv.add("ring:1")  # still served, still registered
    assert bed.processes() == [{"type": "nfv", "client-id": 1}]
    nfv.exit()
    assert not segment_path(bed.prefix).exists()


def test_a_segment_whose_processes_all_died_is_reclaimed(bed):
    bed.launch_nfv(1)
    nfv_pid = next(pid for cid, pid in live_rows(bed) if cid == 1)
    # Another test's primary starting meanwhile would reclaim the segment as soon as both are
    # dead; a lock held on it reads as a live user and keeps it until this test looks.
    shield = os.open(segment_path(bed.prefix), os.O_RDONLY)
    try:
        fcntl.flock(shield, fcntl.LOCK_SH)
        kill_primary(bed)
        os.kill(nfv_pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(nfv_pid), 10, "the nfv to die")
        assert segment_path(bed.prefix).exists()  # nobody was left to remove it
    finally:
        os.close(shield)
    # Any primary starting, whatever its prefix, reclaims it.
    with Testbed(nb_rings=1):
        assert not segment_path(bed.prefix).exists()


def live_rows(bed: Testbed) -> list[tuple[int, int]]:
    seg = Segment.attach(bed.prefix)
    try:
        return [(cid, pid) for cid, pid, _ in seg.live_processes()]
    finally:
        seg.close()


# -- deleting a port in use while forwarding -----------------------------------------------------


def assert_no_buffer_lost(bed: Testbed) -> None:
    """Once every secondary has exited (their caches back in the pool), each buffer is either
    free or waiting in a ring."""
    for entry in bed.processes():
        if entry["type"] != "primary":
            bed.ok("DELETE", f"/v1/{entry['type']}s/{entry['client-id']}")
    seg = Segment.attach(bed.prefix)
    try:
        in_rings = sum(len(Ring(seg, n)) for n in range(seg.spec.nb_rings))
        assert int(seg.pool_ctl[0]) + in_rings == seg.spec.nb_bufs
    finally:
        seg.close()


def source_and_sinks(bed: Testbed, sources: dict[str, str], sinks: dict[str, str]) -> Any:
    """nfv 1 feeds each ring of ``sources`` from a nullpmd and drains each ring of ``sinks`` into one."""
    nfv = bed.launch_nfv(1)
    for ring, null in [*sources.items(), *sinks.items()]:
        nfv.add(ring)
        nfv.add(null)
    for ring, null in sources.items():
        nfv.patch(null, ring)
    for ring, null in sinks.items():
        nfv.patch(ring, null)
    nfv.forward()
    return nfv


def flowing(nfv: Any, sink: str) -> None:
    before = nfv_counter(nfv, sink, "tx")
    wait_for(lambda: nfv_counter(nfv, sink, "tx") > before, 10, f"traffic into {sink}")


def settled(nfv: Any, sink: str) -> int:
    """The sink's count once the ring feeding it has drained (two reads 0.3 s apart agree)."""
    last = [nfv_counter(nfv, sink, "tx")]

    def unchanged() -> bool:
        time.sleep(0.3)
        now = nfv_counter(nfv, sink, "tx")
        same, last[0] = now == last[0], now
        return same

    wait_for(unchanged, 10, f"{sink} to stop counting")
    return last[0]


@pytest.fixture
def bed8():
    with Testbed(nb_rings=8) as b:
        yield b


def test_nfv_del_of_a_port_in_use_detaches_only_its_patches(bed8):
    bed = bed8
    nfv = source_and_sinks(bed, {"ring:0": "nullpmd:0", "ring:1": "nullpmd:2"}, {})
    nfv.add("nullpmd:1")
    nfv.add("nullpmd:3")
    nfv.patch("ring:0", "nullpmd:1")
    nfv.patch("ring:1", "nullpmd:3")
    flowing(nfv, "nullpmd:1")
    nfv.delete("ring:0")  # under traffic, in both directions
    status = nfv.status()
    assert status["status"] == "running" and "ring:0" not in status["ports"]
    assert status["patches"] == [
        {"src": "nullpmd:2", "dst": "ring:1"},
        {"src": "ring:1", "dst": "nullpmd:3"},
    ]
    flowing(nfv, "nullpmd:3")
    assert_no_buffer_lost(bed)


@pytest.mark.parametrize("kind", ["vf", "mirror"])
def test_worker_port_del_of_a_port_in_use_stops_only_its_component(bed8, kind):
    bed = bed8
    comp_type, outputs = ("forward", 1) if kind == "vf" else ("mirror", 2)
    # Two components, A (ring:0 -> ring:2[, ring:3]) and B (ring:1 -> ring:4[, ring:5]).
    tx = {"a": ["ring:2", "ring:3"][:outputs], "b": ["ring:4", "ring:5"][:outputs]}
    sinks = {ring: f"nullpmd:{10 + n}" for n, ring in enumerate(tx["a"] + tx["b"])}
    nfv = source_and_sinks(bed, {"ring:0": "nullpmd:0", "ring:1": "nullpmd:1"}, sinks)
    worker = bed.launch_vf(2) if kind == "vf" else bed.launch_mirror(2)
    for name, rx in (("a", "ring:0"), ("b", "ring:1")):
        worker.wire(name, 1, comp_type, [rx], tx[name])
    flowing(nfv, sinks[tx["a"][0]])
    worker.detach(tx["a"][0], "tx", "a")  # under traffic
    assert [p["port"] for p in worker.component("a")["tx_port"]] == tx["a"][1:]
    stopped = settled(nfv, sinks[tx["a"][0]])  # what was already in the ring still drains
    flowing(nfv, sinks[tx["b"][0]])  # B goes on
    assert nfv_counter(nfv, sinks[tx["a"][0]], "tx") == stopped  # A no longer sends there
    worker.attach(tx["a"][0], "tx", "a")  # and resumes when complete again
    flowing(nfv, sinks[tx["a"][0]])
    assert_no_buffer_lost(bed)


# -- spp-ctl's side, against fake processes ------------------------------------------------------


@pytest.fixture(scope="module")
def fake_ctl():
    server = CtlServer(timeout=1.0, launch_timeout=3.0)
    yield server
    server.close()


def connect_fake(ctl: CtlServer, kind: str, client_id: int | None) -> FakeProcess:
    peer = ctl.connect(kind, client_id)
    entry = {"type": kind} if kind == "primary" else {"type": kind, "client-id": client_id}
    assert ctl.wait_until(lambda: entry in ctl.processes())
    return peer


def test_delete_of_a_process_that_does_not_end_is_a_503(fake_ctl):
    peer = connect_fake(fake_ctl, "nfv", 40)

    def answer_but_stay(command: str) -> Any:
        if command == "exit":
            peer._send(peer.encode({"result": "succeeded", "command": "exit"}))
            return None  # connection left open: the process has not ended
        return ...

    peer.handler = answer_but_stay
    r = fake_ctl.http.delete("/v1/nfvs/40")
    assert r.status_code == 503 and "answered 'exit' but was still running" in r.text
    assert {"type": "nfv", "client-id": 40} not in fake_ctl.processes()
    peer.close()


def test_launch_waits_for_registration_and_reports_the_primarys_reason(fake_ctl):
    primary = connect_fake(fake_ctl, "primary", None)
    try:
        states = iter(["starting", "starting", "failed"])

        def launching(command: str) -> Any:
            if command.startswith("launch "):
                return {"result": "succeeded", "command": "launch", "client_id": 41, "pid": 4242}
            if command == "launch_status 41":
                state = next(states)
                reply = {"result": "succeeded", "command": "launch_status", "client_id": 41, "state": state}
                if state == "failed":
                    reply["message"] = "spp_nfv 41 (pid 4242) exited with status 2 before registering: boom"
                return reply
            return ...

        primary.handler = launching
        body = {"proc_name": "spp_nfv", "client_id": 41, "eal": {"-l": "0,1", "--proc-type": "secondary"}}
        r = fake_ctl.http.put("/v1/primary/launch", json={**body, "app": {}})
        assert r.status_code == 400 and r.text.endswith("exited with status 2 before registering: boom")
        assert primary.commands.count("launch_status 41") == 3

        # Still starting when spp-ctl's own launch timeout (3 s) is over: 504.
        primary.handler = lambda c: (
            {"result": "succeeded", "command": "launch_status", "state": "starting"}
            if (c.startswith("launch_status"))
            else launching(c)
        )
        r = fake_ctl.http.put("/v1/primary/launch", json={**body, "app": {}})
        assert r.status_code == 504 and "did not register within 3 s" in r.text
    finally:
        primary.close()


def test_a_recycled_pid_does_not_hold_a_row(segment):
    segment.claim_process_slot(7, "vf")
    assert segment.live_processes() == [(7, os.getpid(), "vf")]
    segment.procs[7, P_START] += 1  # the same pid, another process
    assert segment.live_processes() == []
    assert segment.process_state(7)[1] == STATE_FREE
