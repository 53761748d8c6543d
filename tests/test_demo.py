"""The README's main job: the demo runs to the end, shows traffic (and, as root, a ping across
the panel) and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys

from spp.integrations.testbed import free_port


def test_demo_runs_shows_traffic_and_cleans_up():
    r = subprocess.run(
        [sys.executable, "-m", "spp.demo", "--seconds", "1", "--api-port", str(free_port())],
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
    if os.geteuid() == 0:
        assert "3 packets transmitted, 3 received" in out
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert "spp-demo" not in netns
