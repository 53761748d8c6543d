"""The real ``spp`` CLI against the real spp-ctl, with fake SPP processes on its wire ports.

The fake processes (``tests.ctl_doubles.FakeProcess``) answer like SPP's C processes
(32 KiB NUL-padded JSON for primary/nfv, worker-style JSON for vf/mirror/pcap) and record every
command they receive, so each test checks both what the CLI printed and the exact command string
that reached the process.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import ctl_doubles as testing
from tests.cli_doubles import run_cli


class Stack:
    """spp-ctl plus a primary, nfv 1, vf 2, mirror 3 and pcap 4 on its wire ports."""

    def __init__(self) -> None:
        self.ctl = testing.CtlServer()
        try:
            self.procs: dict[str, Any] = {
                "primary": self.ctl.connect("primary"),
                "nfv": self.ctl.connect("nfv", 1),
                "vf": self.ctl.connect("vf", 2),
                "mirror": self.ctl.connect("mirror", 3),
                "pcap": self.ctl.connect("pcap", 4),
            }
            if not self.ctl.wait_until(lambda: len(self.ctl.processes()) == 5, timeout=10):
                raise RuntimeError(f"fake processes did not register: {self.ctl.processes()}")
        except BaseException:
            self.ctl.close()
            raise

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.ctl.api_port}"

    def reset(self) -> None:
        for p in self.procs.values():
            p.clear()
            p.replies.clear()

    def sent(self, kind: str) -> list[str]:
        """Commands that reached one process, without the ``status`` look-ups."""
        return [c for c in self.procs[kind].commands if c != "status"]

    def close(self) -> None:
        for p in self.procs.values():
            p.close()
        self.ctl.close()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack()
    yield s
    s.close()


@pytest.fixture
def spp(stack: Stack, tmp_path: Path):
    stack.reset()

    def run(*commands: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("home", tmp_path)
        kw.setdefault("cwd", tmp_path)
        return run_cli(stack.addr, *commands, **kw)

    return run


def lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in res.stderr
    return res.stdout.splitlines()


def test_status_and_pri_status(spp, stack: Stack) -> None:
    res = spp("status", "pri; status")
    assert res.returncode == 0, res.stderr
    assert lines(res) == [
        "- spp-ctl:",
        f"  - address: {stack.addr}",
        "- primary:",
        "  - status: running",
        "- secondary:",
        "  - processes:",
        "    1: nfv:1",
        "    2: vf:2",
        "    3: mirror:3",
        "    4: pcap:4",
        "- lcore_ids:",
        "  - master: 0",
        "  - slave: 1",
        "- forwarder:",
        "  - status: idling",
        "  - ports:",
        "    - phy:0",
        "    - ring:0",
        "- pipes:",
        "- stats",
        "  - physical ports:",
        "      ID          rx          tx     tx_drop  rxq  txq mac_addr",
        "       0           0           0           0    1    1 56:48:4f:53:54:00",
        "  - ring ports:",
        "      ID          rx          tx     rx_drop     tx_drop",
        "       0           0           0           0           0",
        "       1           0           0           0           0",
    ]
    assert stack.procs["primary"].commands == ["status"]


def test_pri_commands_on_the_wire(spp, stack: Stack) -> None:
    res = spp(
        "pri; add ring:1",
        "pri; patch ring:0 ring:1",
        "pri; patch reset",
        "pri; forward",
        "pri; stop",
        "pri; clear",
        "pri; del ring:1",
        "pri; add pipe:0 ring:0 ring:1",
        "config sec_wait_launch 0",
        "pri; launch nfv 5 -l 1,2 -m 512 -- -n 5 -s 127.0.0.1:6666",
    )
    assert res.returncode == 0, res.stderr
    assert lines(res) == [
        "Add ring:1.",
        "Patch ports (ring:0 -> ring:1).",
        "Clear all of patches.",
        "Start forwarding.",
        "Stop forwarding.",
        "Clear port statistics.",
        "Delete ring:1.",
        "Add pipe:0.",
        'Set sec_wait_launch: "0"',
        "Send request to launch nfv:5.",
    ]
    assert stack.sent("primary") == [
        "add ring:1",
        "patch ring:0 ring:1",
        "patch reset",
        "forward",
        "stop",
        "clear",
        "del ring:1",
        "add pipe:0 ring:0 ring:1",
        "launch 5 spp_nfv -l 1,2 --proc-type secondary -m 512 -- -n 5 -s 127.0.0.1:6666",
    ]


def test_nfv_commands_on_the_wire(spp, stack: Stack) -> None:
    res = spp(
        "nfv 1; status",
        "nfv 1; add ring:1",
        "nfv 1; patch phy:0 nq 1 ring:0",
        "nfv 1; patch reset",
        "nfv 1; forward",
        "nfv 1; stop",
        "nfv 1; del ring:1",
    )
    assert res.returncode == 0, res.stderr
    assert lines(res) == [
        "- status: idling",
        "- lcore_ids:",
        "  - master: 1",
        "  - slave: 2",
        "- ports:",
        "  - phy:0",
        "  - phy:1",
        "  - ring:0",
        "Add ring:1.",
        "Patch ports (phy:0 nq 1 -> ring:0).",
        "Clear all of patches.",
        "Start forwarding.",
        "Stop forwarding.",
        "Delete ring:1.",
    ]
    assert stack.sent("nfv") == [
        "add ring:1",
        "patch phy:0nq1 ring:0",
        "patch reset",
        "forward",
        "stop",
        "del ring:1",
    ]


def test_errors_from_spp_ctl_are_one_line(spp, stack: Stack) -> None:
    res = spp("nfv 1; add foo:1", "nfv 7; status", "pri; patch ring:0 nope")
    assert res.returncode == 1
    assert res.stdout == ""
    errs = res.stderr.splitlines()
    assert "Traceback" not in res.stderr
    assert len(errs) == 3
    assert errs[0].startswith("Error: ") and "foo:1" in errs[0]
    assert errs[1] == '"nfv 7" does not exist.'
    assert errs[2].startswith("Error: ") and "nope" in errs[2]
    assert stack.sent("nfv") == [] and stack.sent("primary") == []  # refused by spp-ctl's validation


def test_vf_commands_on_the_wire(spp, stack: Stack) -> None:
    stack.procs["vf"].replies["component start bad 9 forward"] = {
        "results": [{"result": "error", "error_details": {"message": "Invalid value (core)"}}]
    }
    res = spp(
        "vf 2; status",
        "vf 2; component start fwd2 3 forward",
        "vf 2; port add phy:0 nq 1 rx fwd2 add_vlantag 101 3",
        "vf 2; port del ring:0 tx fwd1",
        "vf 2; classifier_table add mac FA:16:3E:7D:CC:35 ring:0",
        "vf 2; classifier_table del vlan 101 default ring:0",
        "vf 2; component stop fwd1",  # one the (scripted) status lists
        "vf 2; component start bad 9 forward",
    )
    assert lines(res) == [
        "Basic Information:",
        "  - client-id: 2",
        "  - ports: [phy:0, phy:0 nq 1, ring:0]",
        "  - lcore_ids:",
        "    - master: 1",
        "    - slaves: [2, 3]",
        "Classifier Table:",
        "  - FA:16:3E:7D:CC:35, ring:0",
        "Components:",
        "  - core:2 'fwd1' (type: forward)",
        "    - rx: phy:0",
        "    - tx: ring:0",
        "  - core:3 '' (type: unuse)",
        "Succeeded to start component 'fwd2' on core:3",
        "Succeeded to add port",
        "Succeeded to del port",
        "Succeeded to add",
        "Succeeded to del",
        "Succeeded to delete component 'fwd1'",
    ]
    assert res.stderr.splitlines() == ["Error: command error: Invalid value (core)"]
    assert res.returncode == 1
    assert stack.sent("vf") == [
        "component start fwd2 3 forward",
        "port add phy:0nq1 rx fwd2 add_vlantag 101 3",
        "port del ring:0 tx fwd1",
        "classifier_table add mac FA:16:3E:7D:CC:35 ring:0",
        "classifier_table del vlan 101 default ring:0",
        "component stop fwd1",
        "component start bad 9 forward",
    ]


def test_mirror_pcap_and_topo(spp, stack: Stack) -> None:
    res = spp(
        "mirror 3; component start mr2 3 mirror",
        "mirror 3; port add ring:1 tx mr2",
        "pcap 4; start",
        "pcap 4; status",
        "pcap 4; stop",
        "topo dot",
    )
    assert res.returncode == 0, res.stderr
    out = lines(res)
    assert out[:3] == [
        "Succeeded to start component 'mr2' on core:3",
        "Succeeded to add port",
        "Start packet capture.",
    ]
    assert out[3:14] == [
        "Basic Information:",
        "  - client-id: 4",
        "  - status: idle",
        "  - lcore_ids:",
        "    - master: 1",
        "    - slaves: [2, 3]",
        "Components:",
        "  - core:2 receive",
        "    - rx: phy:0",
        "  - core:3 write",
        "    - filename: ",
    ]
    assert out[14] == "Stop packet capture."
    assert out[15] == "digraph spp{"
    assert 'phy_0 -> ring_0[label="vf:2:f", color="orange", style="solid"];' in out
    assert 'phy_0 -> spppcap_4[label="pcap:4", color="black", style="dashed"];' in out
    assert stack.sent("mirror") == ["component start mr2 3 mirror", "port add ring:1 tx mr2"]
    assert stack.sent("pcap") == ["start", "stop"]


def test_bye_sec_then_gone(tmp_path: Path) -> None:
    """``bye sec`` sends ``exit`` to every secondary; afterwards spp-ctl lists only the primary."""
    s = Stack()
    try:
        res = run_cli(s.addr, "bye sec", "status", home=tmp_path)
        assert res.returncode == 0, res.stderr
        assert lines(res) == [
            "Closing secondary ...",
            "Exit nfv 1",
            "Exit vf 2.",
            "Exit mirror 3.",
            "Exit pcap 4.",
            "- spp-ctl:",
            f"  - address: {s.addr}",
            "- primary:",
            "  - status: running",
            "- secondary:",
            "  - processes:",
        ]
        for kind in ("nfv", "vf", "mirror", "pcap"):
            assert s.procs[kind].commands[-1] == "exit"
    finally:
        s.close()
