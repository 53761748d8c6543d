"""Process lifecycle that scripts can rely on: exit, relaunch, failed launches, a primary
without a forwarder lcore. Real spp-ctl, primary and secondaries, driven over REST."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from typing import Any

import httpx
import pytest

from spp.engine.shm import pid_alive, segment_path
from spp.integrations.testbed import Testbed, free_port, launch_pcap, wait_for
from spp.processes.options import parse_eal

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
