"""The README's main job: the demo runs to the end, shows traffic (and, as root, a ping across
the panel) and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spp.engine.shm import segment_path
from spp.instance import log_dir
from spp.integrations.testbed import Testbed, free_port
from tests.leakcheck import run_token

PREFIX = f"demo{run_token()}"  # the demo's instance: its namespaces and logs are named from it


def test_demo_runs_shows_traffic_and_cleans_up():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "spp.demo",
            "--seconds",
            "1",
            "--api-port",
            str(free_port()),
            "--file-prefix",
            PREFIX,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "launched nfv 1 and nfv 2 through PUT /v1/primary/launch" in out
    assert " Mpps of 64-byte frames through a shared ring" in out
    assert "- status: running" in out  # the CLI's view of nfv 1
    assert "all processes stopped, shared memory removed" in out
    assert not segment_path(PREFIX).exists()
    assert not log_dir(PREFIX).exists(), "the demo's logs go with it when all went well"
    if os.geteuid() == 0:
        assert "3 packets transmitted, 3 received" in out
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"spp-{PREFIX}-" not in netns


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spp.demo", "--seconds", "1", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_demo_never_drives_a_running_spp_ctl_it_did_not_start():
    """A user's spp-ctl, primary and nfv are running; the demo pointed at the user's port, or at
    the user's file prefix, refuses and leaves all of it as it was."""
    with Testbed(nb_rings=2) as user:
        nfv = user.launch_nfv(1)
        nfv.add("ring:0")
        nfv.add("nullpmd:0")
        nfv.patch("nullpmd:0", "ring:0")
        processes, status = user.processes(), nfv.status()

        r = run_demo("--api-port", str(user.api_port), "--no-netns")
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"port {user.api_port} is in use (another spp-ctl?)" in r.stdout
        assert "never drives one it did not start" in r.stdout

        r = run_demo("--file-prefix", user.prefix, "--no-netns")
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"file prefix '{user.prefix}' is in use by a running primary" in r.stdout

        assert user.processes() == processes
        assert nfv.status() == status
        assert segment_path(user.prefix).exists()


def test_two_demos_at_once_do_not_collide():
    """Each demo instance has its own ports, prefix and (as root) namespaces."""
    argv = [sys.executable, "-m", "spp.demo", "--seconds", "2", "--api-port"]
    procs = [
        subprocess.Popen(
            [*argv, str(free_port()), "--file-prefix", f"{PREFIX}{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out
        assert "all processes stopped, shared memory removed" in out
        if os.geteuid() == 0:
            assert "3 packets transmitted, 3 received" in out


_USER_ON_SPP_PORTS = """
import subprocess, sys
from spp.integrations.testbed import Testbed

with Testbed(api_port=7777, pri_port=5555, sec_port=6666, nb_rings=2) as user:
    nfv = user.launch_nfv(1)
    nfv.add("ring:0")
    before = (user.processes(), nfv.status())
    r = subprocess.run(
        [sys.executable, "-m", "spp.demo", "--seconds", "1", "--no-netns", "--file-prefix", sys.argv[1]],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    print(r.stdout, r.stderr)
    assert r.returncode == 0
    assert "SPP's ports 7777/5555/6666 are in use (another spp-ctl?): left alone," in r.stdout
    assert "all processes stopped, shared memory removed" in r.stdout
    assert (user.processes(), nfv.status()) == before, "the user's processes were touched"
print("USER-UNTOUCHED")
"""


def test_demo_beside_a_user_spp_ctl_on_spps_own_ports_leaves_it_alone():
    """The reported case: a user's spp-ctl on 7777/5555/6666 and the demo started with no
    options. It runs on free ports of its own and never drives the user's processes. A network
    namespace of the test's own makes SPP's ports certainly free for the user's instance."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    ns = f"spp-{PREFIX}-ports"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        r = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _USER_ON_SPP_PORTS, f"{PREFIX}p"],
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0 and "USER-UNTOUCHED" in r.stdout, r.stdout + r.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
