"""End to end with real processes: spp-ctl, spp-primary and spp-nfv, driven over REST."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spp.integrations.testbed import Testbed, wait_for
from tests.test_engine_ports import mixed_frames, read_pcap, write_pcap


@pytest.fixture
def bed():
    with Testbed(nb_rings=4) as b:
        yield b


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nfv_pid(bed: Testbed, client_id: int) -> int:
    primary = bed.pids()["spp-primary"]
    for child in Path(f"/proc/{primary}/task/{primary}/children").read_text().split():
        cmd = Path(f"/proc/{child}/cmdline").read_text().split("\0")
        if "spp.processes.nfv" in cmd and cmd[cmd.index("-n") + 1] == str(client_id):
            return int(child)
    raise AssertionError(f"no nfv {client_id} child of the primary")


def test_launch_registers_before_answering(bed):
    bed.launch_nfv(1)
    # No sleep: the 204 of launch means the secondary is already usable.
    assert {"type": "nfv", "client-id": 1} in bed.processes()
    st = bed.nfv(1).status()
    assert st["client-id"] == 1 and st["status"] == "idling" and st["ports"] == [] and st["patches"] == []
    assert st["lcores"] == [0, 1] and st["master-lcore"] == 0
    r = bed.request(
        "PUT",
        "/v1/primary/launch",
        {
            "proc_name": "spp_nfv",
            "client_id": 1,
            "eal": {"-l": "0,1", "--proc-type": "secondary"},
            "app": {"-n": "1", "-s": f"127.0.0.1:{bed.sec_port}"},
        },
    )
    assert r.status_code in (400, 409) and "already used" in r.text


def test_pcap_through_a_ring_between_two_nfvs_is_byte_identical(bed, tmp_path):
    """1,000 frames of mixed sizes: pcap:rx -> ring:0 (nfv 1) -> ring:0 -> pcap:tx (nfv 2)."""
    n_in, n_out = 800 + os.getpid() % 90, 890 + os.getpid() % 90
    rx_file, tx_file = f"/tmp/spp-rx{n_in}.pcap", f"/tmp/spp-tx{n_out}.pcap"
    frames = mixed_frames(1000, seed=11)
    write_pcap(rx_file, frames)
    made = [rx_file, tx_file, f"/tmp/spp-tx{n_in}.pcap", f"/tmp/spp-rx{n_out}.pcap"]
    try:
        nfv1, nfv2 = bed.launch_nfv(1), bed.launch_nfv(2)
        nfv2.add("ring:0")
        nfv2.add(f"pcap:{n_out}")
        nfv2.patch("ring:0", f"pcap:{n_out}")
        nfv2.forward()
        nfv1.add(f"pcap:{n_in}")
        nfv1.add("ring:0")
        nfv1.patch(f"pcap:{n_in}", "ring:0")
        nfv1.forward()
        wait_for(lambda: bed.ring_stats(0)["rx"] == 1000, 10, "1000 frames through ring:0")
        nfv1.stop()
        nfv2.stop()
        nfv2.delete(f"pcap:{n_out}")  # closes the file
        assert read_pcap(Path(tx_file)) == frames
        ring = bed.ring_stats(0)
        assert ring["tx"] == 1000 and ring["tx_drop"] == 0
    finally:
        for f in made:
            if os.path.exists(f):
                os.unlink(f)


def test_bad_input_gets_clear_errors_and_traffic_keeps_flowing(bed):
    nfv1, nfv2 = bed.launch_nfv(1), bed.launch_nfv(2)
    nfv1.add("nullpmd:0")
    nfv1.add("ring:0")
    nfv1.patch("nullpmd:0", "ring:0")
    nfv2.add("ring:0")
    nfv2.add("nullpmd:1")
    nfv2.patch("ring:0", "nullpmd:1")
    nfv2.forward()
    nfv1.forward()
    before = bed.ring_stats(0)["rx"]
    cases = [
        ("PUT", "/v1/nfvs/1/ports", {"action": "add", "port": "foo:1"}, 400, "foo:1"),
        ("PUT", "/v1/nfvs/1/ports", {"action": "add", "port": "ring:x"}, 400, "ring:x"),
        ("PUT", "/v1/nfvs/1/ports", {"action": "add", "port": "ring:99"}, 400, "ring:99"),
        ("PUT", "/v1/nfvs/1/ports", {"action": "add", "port": "ring:0"}, 400, "already added"),
        ("PUT", "/v1/nfvs/1/ports", {"action": "add"}, 400, "key(port) required."),
        ("PUT", "/v1/nfvs/1/ports", {"action": "plug", "port": "ring:1"}, 400, "plug"),
        ("PUT", "/v1/nfvs/1/patches", {"src": "ring:2", "dst": "ring:3"}, 400, "not added"),
        ("PUT", "/v1/nfvs/1/ports", {"action": "add", "port": "memif:0"}, 400, "memif"),
        ("PUT", "/v1/nfvs/9/ports", {"action": "add", "port": "ring:1"}, 404, "sec_id 9 not found."),
        ("GET", "/v1/nfvs/9", None, 404, "sec_id 9 not found."),
        ("PUT", "/v1/nfvs/1/forward", {"action": "sideways"}, 400, "sideways"),
    ]
    for method, path, body, code, text in cases:
        r = bed.request(method, path, body)
        assert r.status_code == code, (method, path, body, r.status_code, r.text)
        assert text in r.text, (method, path, body, r.text)
    r = bed.http.put("/v1/nfvs/1/ports", content=b'{"action": "add", "port": ')  # malformed JSON
    assert r.status_code == 400 and r.text == "Not in json format."
    r = bed.http.put("/v1/nfvs/1/ports", content=b'{"action": "add", "port": "ring:1"}')  # no Content-Type
    assert r.status_code == 204
    # Still both workers alive and still moving packets.
    assert {"type": "nfv", "client-id": 1} in bed.processes()
    assert {"type": "nfv", "client-id": 2} in bed.processes()
    wait_for(lambda: bed.ring_stats(0)["rx"] > before + 100_000, 10, "traffic to keep flowing")
    assert nfv1.status()["status"] == "running"


def test_a_worker_that_dies_is_dropped(bed):
    bed.launch_nfv(3)
    pid = nfv_pid(bed, 3)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: {"type": "nfv", "client-id": 3} not in bed.processes(), 5, "nfv 3 to be dropped")
    assert bed.request("GET", "/v1/nfvs/3").status_code == 404
    # Its id is free again: the shared process table does not keep a dead holder.
    bed.launch_nfv(3)
    assert bed.nfv(3).status()["client-id"] == 3


def test_repatching_between_processes_under_traffic_counts_every_packet(bed):
    nfv1, nfv2 = bed.launch_nfv(1), bed.launch_nfv(2)
    for p in ("nullpmd:0", "ring:0"):
        nfv1.add(p)
    nfv1.patch("nullpmd:0", "ring:0")
    for p in ("ring:0", "ring:1", "ring:2", "nullpmd:1"):
        nfv2.add(p)
    # nfv 2 moves ring:0 alternately to ring:1 and ring:2; both drain into the sink.
    nfv2.patch("ring:0", "ring:1")
    nfv2.patch("ring:1", "nullpmd:1")
    nfv2.patch("ring:2", "nullpmd:1")
    nfv2.forward()
    nfv1.forward()
    for i in range(20):
        nfv2.patch("ring:0", "ring:2" if i % 2 == 0 else "ring:1")
        time.sleep(0.02)
    nfv1.stop()
    time.sleep(0.3)  # let nfv 2 drain what is left in the rings
    nfv2.stop()
    rings = bed.primary_status()["ring_ports"]
    r0, r1, r2 = rings[0], rings[1], rings[2]
    assert r0["rx"] == r0["tx"]  # everything that entered ring:0 left it
    assert r0["rx"] == r1["tx"] + r1["tx_drop"] + r2["tx"] + r2["tx_drop"]
    assert r1["rx"] == r1["tx"] and r2["rx"] == r2["tx"]  # and nothing is stuck in ring:1/ring:2
    assert r1["tx"] > 0 and r2["tx"] > 0


def test_idle_nfv_does_not_spin(bed):
    nfv = bed.launch_nfv(1)
    nfv.add("ring:0")
    nfv.add("ring:1")
    nfv.patch("ring:0", "ring:1")
    nfv.forward()  # forwarding, but nothing arrives
    pid = nfv_pid(bed, 1)
    time.sleep(0.5)
    c0 = cpu_seconds(pid)
    time.sleep(2)
    used = cpu_seconds(pid) - c0
    assert used < 0.2, f"idle nfv used {used:.2f} s of CPU in 2 s"


def test_ring_counters_survive_port_deletion_and_clear_resets(bed):
    nfv = bed.launch_nfv(1)
    nfv.add("nullpmd:0")
    nfv.add("ring:1")
    nfv.patch("nullpmd:0", "ring:1")
    nfv.forward()
    # Under load the worker may be a few bursts short of full when asked to stop: wait for the
    # ring to fill and refuse at least one burst.
    wait_for(lambda: bed.ring_stats(1)["tx_drop"] > 0, 10, "ring:1 to fill and refuse")
    nfv.stop()
    nfv.delete("ring:1")
    assert bed.ring_stats(1)["tx"] == 1024  # the ring is full; the rest was refused
    assert bed.ring_stats(1)["tx_drop"] > 0
    assert bed.ring_stats(1)["tx_bytes"] == 1024 * 64  # the null source's frames are 64 bytes
    assert bed.ring_stats(1)["fill"] == 1024
    mine = [e for e in bed.primary_status()["process_stats"] if e["port"] == "ring:1"]
    assert [(e["process"], e["client-id"], e["tx"]) for e in mine] == [("nfv", 1, 1024)]
    bed.ok("DELETE", "/v1/primary/status")
    zeros = {"id": 1, "rx": 0, "rx_drop": 0, "tx": 0, "tx_drop": 0, "rx_bytes": 0, "tx_bytes": 0}
    assert {k: v for k, v in bed.ring_stats(1).items() if k in zeros} == zeros


def test_primary_pipes_and_no_forwarder_with_one_lcore(bed):
    body = {"action": "add", "port": "pipe:0", "rx": "ring:0", "tx": "ring:1"}
    assert bed.request("PUT", "/v1/primary/ports", body).status_code == 204
    assert bed.primary_status()["pipes"] == [{"id": 0, "rx": 0, "tx": 1}]
    r = bed.request("PUT", "/v1/primary/ports", body)
    assert r.status_code == 400 and "already added" in r.text
    assert "forwarder" not in bed.primary_status()
    # Without a forwarder lcore ports are still added (SPP's primary does); forwarding is refused.
    assert bed.request("PUT", "/v1/primary/ports", {"action": "add", "port": "ring:0"}).status_code == 204
    r = bed.request("PUT", "/v1/primary/forward", {"action": "start"})
    assert r.status_code == 400 and "no forwarder lcore" in r.text
    assert bed.request("PUT", "/v1/primary/ports", {"action": "del", "port": "pipe:0"}).status_code == 204
    assert bed.primary_status()["pipes"] == []


def test_primary_forwarder_with_two_lcores():
    with Testbed(nb_rings=2, primary_lcores="0,1") as bed:
        st = bed.primary_status()
        assert st["forwarder"] == {"status": "idling", "ports": [], "patches": []}
        for port in ("nullpmd:0", "ring:0"):
            bed.ok("PUT", "/v1/primary/ports", {"action": "add", "port": port})
        bed.ok("PUT", "/v1/primary/patches", {"src": "nullpmd:0", "dst": "ring:0"})
        bed.ok("PUT", "/v1/primary/forward", {"action": "start"})
        wait_for(lambda: bed.ring_stats(0)["tx"] > 0, 5, "the primary forwarder to fill ring:0")
        st = bed.primary_status()["forwarder"]
        assert st["status"] == "running"
        assert st["patches"] == [{"src": "nullpmd:0", "dst": "ring:0"}]
        bed.ok("PUT", "/v1/primary/forward", {"action": "stop"})


def test_a_second_nfv_with_a_taken_id_refuses_to_start(bed):
    bed.start_nfv(4)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "spp.processes.nfv",
            "-l",
            "0,1",
            "--file-prefix",
            bed.prefix,
            "--",
            "-n",
            "4",
            "-s",
            f"127.0.0.1:{bed.sec_port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert "client id 4 is already used by pid" in r.stderr
    assert bed.nfv(4).status()["client-id"] == 4  # the first one is untouched


def test_nfv_without_a_primary_says_so():
    r = subprocess.run(
        [sys.executable, "-m", "spp.processes.nfv", "--file-prefix", "nosuchprimary", "--", "-n", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "start spp-primary first" in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0"], "number of rings"),
        (["-n", "2", "--iface", "nosuchif0"], "interface 'nosuchif0' not found"),
        (["-n", "2", "-p", "zz"], "invalid portmask"),
        (["-n", "2", "--ring-size", "1000"], "power of two"),
    ],
)
def test_primary_rejects_bad_options(args, message):
    argv = [sys.executable, "-m", "spp.processes.primary", "--file-prefix", "badopts", "--", *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and message in r.stderr, r.stderr


def test_dpdk_style_eal_options_are_accepted(bed):
    """A command line written for SPP's C spp_nfv works unchanged (EAL options we do not need
    are accepted and ignored; the segment is found by --file-prefix alone)."""
    bed._spawn(
        "spp_nfv-6",
        [
            sys.executable,
            "-m",
            "spp.processes.nfv",
            "-l",
            "0,1",
            "-n",
            "4",
            "--proc-type",
            "secondary",
            "--socket-mem",
            "512,512",
            "--huge-dir",
            "/dev/hugepages",
            "--base-virtaddr",
            "0x100000000",
            "--no-pci",
            "--file-prefix",
            bed.prefix,
            "--",
            "-n",
            "6",
            "-s",
            f"127.0.0.1:{bed.sec_port}",
        ],
    )
    wait_for(lambda: {"type": "nfv", "client-id": 6} in bed.processes(), 15, "nfv 6 to register")
    assert bed.nfv(6).status()["lcores"] == [0, 1]
