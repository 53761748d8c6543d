"""The real ``spp`` CLI in batch mode against a scripted spp-ctl on a real HTTP port.

Each test asserts the exact lines printed, the exit status and the exact REST calls made (method,
path, JSON body). Error replies (400/404/500, time-outs, refused connections) are easy to script
here; tests/test_cli_ctl.py repeats the main paths against the real spp-ctl.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.cli_doubles import FakeCtl, cli_env, run_cli

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeCtl]:
    s = FakeCtl()
    yield s
    s.close()


@pytest.fixture
def ctl(server: FakeCtl) -> FakeCtl:
    server.reset()
    return server


@pytest.fixture
def spp(ctl: FakeCtl, tmp_path: Path) -> Run:
    """``spp(*commands, args=(), stdin=None)`` against the fake spp-ctl, cwd and HOME in tmp_path."""

    def run(*commands: str, **kw) -> subprocess.CompletedProcess[str]:
        kw.setdefault("home", tmp_path)
        kw.setdefault("cwd", tmp_path)
        return run_cli(ctl.addr, *commands, **kw)

    return run


def out(res: subprocess.CompletedProcess[str]) -> list[str]:
    return res.stdout.splitlines()


def err(res: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in res.stderr
    return res.stderr.splitlines()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- common commands -----------------------------------------------------------------------------


def test_status(spp: Run, ctl: FakeCtl) -> None:
    res = spp("status")
    assert res.returncode == 0, res.stderr
    assert out(res) == [
        "- spp-ctl:",
        f"  - address: {ctl.addr}",
        "- primary:",
        "  - status: running",
        "- secondary:",
        "  - processes:",
        "    1: nfv:1",
        "    2: vf:2",
        "    3: mirror:3",
        "    4: pcap:4",
    ]
    assert ctl.calls() == [("GET", "/v1/processes", None)] * 2  # start-up probe + status


def test_status_without_primary(spp: Run, ctl: FakeCtl) -> None:
    ctl.routes[("GET", "/v1/processes")] = (
        200,
        [{"type": "vf", "client-id": 3}, {"type": "nfv", "client-id": 2}],
    )
    assert out(spp("status"))[3:] == [
        "  - status: not running",
        "- secondary:",
        "  - processes:",
        "    1: nfv:2",
        "    2: vf:3",
    ]


def test_unreachable_spp_ctl() -> None:
    port = closed_port()
    res = run_cli(f"127.0.0.1:{port}", "status")
    assert res.returncode == 1
    assert res.stdout == ""
    assert err(res) == [f"Is not spp-ctl running on 127.0.0.1:{port}, nor correct IP address?"]


def test_bad_arguments() -> None:
    res = run_cli("10.0.0.1:80", "status")
    assert res.returncode == 2
    assert "invalid --bind-addr: port 80 out of range 1023-65535" in res.stderr


def test_unknown_command_and_help(spp: Run) -> None:
    res = spp("foo bar", "help nope", "help nfv", "help")
    assert res.returncode == 1
    assert err(res) == [
        "Invalid command: 'foo'. Type 'help' to list commands.",
        "No help on 'nope': no such command.",
    ]
    text = res.stdout
    assert text.startswith("Send a command to spp_nfv N: nfv N; SUB")
    assert "Documented commands (type help <topic>):" in text
    names = {"pri", "nfv", "vf", "mirror", "pcap", "topo", "topo_subgraph", "load_cmd", "playback", "bye"}
    assert names <= set(text.split())


# -- pri ---------------------------------------------------------------------------------------


def test_pri_status(spp: Run) -> None:
    res = spp("pri; status")
    assert res.returncode == 0, res.stderr
    assert out(res) == [
        "- lcore_ids:",
        "  - master: 0",
        "  - slave: 1",
        "- forwarder:",
        "  - status: idling",
        "  - ports:",
        "    - phy:0 -> ring:0",
        "    - phy:1",
        "    - ring:0",
        "- pipes:",
        "  - pipe:0 ring:0 ring:1",
        "- stats",
        "  - physical ports:",
        "      ID          rx          tx     tx_drop  rxq  txq mac_addr",
        "       0           0           0           0    1    1 56:48:4f:53:54:00",
        "       1      123456        7890          12    2    2 56:48:4f:53:54:01",
        "  - ring ports:",
        "      ID          rx          tx     rx_drop     tx_drop",
        "       0           0           0           0           0",
        "       1           5           5           0           1",
    ]


def test_pri_commands_and_rest_calls(spp: Run, ctl: FakeCtl) -> None:
    res = spp(
        "pri; add ring:1",
        "pri ;  add pipe:1 ring:0 ring:1",
        "pri; del ring:1",
        "pri; patch phy:1 ring:1",
        "pri; patch reset",
        "pri; forward",
        "pri; stop",
        "pri; clear",
    )
    assert res.returncode == 0, res.stderr
    assert out(res) == [
        "Add ring:1.",
        "Add pipe:1.",
        "Delete ring:1.",
        "Patch ports (phy:1 -> ring:1).",
        "Clear all of patches.",
        "Start forwarding.",
        "Stop forwarding.",
        "Clear port statistics.",
    ]
    assert ctl.calls(skip_get=True) == [
        ("PUT", "/v1/primary/ports", {"action": "add", "port": "ring:1"}),
        ("PUT", "/v1/primary/ports", {"action": "add", "port": "pipe:1", "rx": "ring:0", "tx": "ring:1"}),
        ("PUT", "/v1/primary/ports", {"action": "del", "port": "ring:1"}),
        ("PUT", "/v1/primary/patches", {"src": "phy:1", "dst": "ring:1"}),
        ("DELETE", "/v1/primary/patches", None),
        ("PUT", "/v1/primary/forward", {"action": "start"}),
        ("PUT", "/v1/primary/forward", {"action": "stop"}),
        ("DELETE", "/v1/primary/status", None),
    ]
    # every pri sub-command looks at the primary's status first
    assert ctl.calls().count(("GET", "/v1/primary/status", None)) == 8


def test_pri_refusals_send_nothing(spp: Run, ctl: FakeCtl) -> None:
    res = spp(
        "pri; add ring:0",
        "pri; del phy:0",
        "pri; del ring:0",
        "pri; add",
        "pri; patch phy:0",
        "pri; patch",
        "pri; bogus",
        "pri status",
        "pri; add pipe:1 ring:0",
        "pri; forward now",
    )
    assert res.returncode == 1
    assert res.stdout == ""
    assert err(res) == [
        "'ring:0' is already added.",
        "Cannot delete phy port 'phy:0'.",
        "Cannot delete patched port 'ring:0'.",
        "Port is required!",
        "Dst port is required!",
        "Params are required!",
        "Invalid pri command: 'bogus'",
        "Required ';' after 'pri', e.g. 'pri; status' (got 'pri status').",
        "Usage: add pipe:N ring:A ring:B",
        "'forward' takes no arguments, got 'now'.",
    ]
    assert ctl.calls(skip_get=True) == []


def test_pri_without_forwarder(spp: Run, ctl: FakeCtl) -> None:
    status = dict(ctl.routes[("GET", "/v1/primary/status")][1])
    del status["forwarder"]
    ctl.routes[("GET", "/v1/primary/status")] = (200, status)
    res = spp("pri; forward", "pri; add ring:3", "pri; patch phy:0 ring:0", "pri; add pipe:2 ring:2 ring:3")
    assert err(res) == ["No forwarder is running."] * 3
    assert out(res) == ["Add pipe:2."]
    assert ctl.calls(skip_get=True) == [
        ("PUT", "/v1/primary/ports", {"action": "add", "port": "pipe:2", "rx": "ring:2", "tx": "ring:3"})
    ]


def test_pri_not_running(spp: Run, ctl: FakeCtl) -> None:
    ctl.routes[("GET", "/v1/primary/status")] = (404, "primary not found.")
    res = spp("pri; status")
    assert (res.returncode, res.stdout, err(res)) == (1, "", ["No spp_primary is running."])
    ctl.routes[("GET", "/v1/primary/status")] = (500, "")
    res = spp("pri; status")
    assert err(res) == ["Error: spp_primary is not running normally (HTTP 500 Internal Server Error)."]


def test_pri_launch(spp: Run, ctl: FakeCtl) -> None:
    res = spp(
        "config sec_wait_launch 0",
        "pri; launch nfv 5 -l 1,2 -m 512 -- -n 5 -s 127.0.0.1:6666",
        "pri; launch spp_vf -l 1,4-7 --no-pci -m 512 -- --client-id 6 -s 127.0.0.1:6666 --vhost-client",
        "pri; launch nfv 1 -l 1,2 -- -n 1",
        "pri; launch nfv 7 -l 1,2",
        "pri; launch",
    )
    assert out(res) == [
        'Set sec_wait_launch: "0"',
        "Send request to launch nfv:5.",
        "Send request to launch vf:6.",
    ]
    assert err(res) == [
        "Secondary ID 1 is already used!",
        'Arguments should include separator "--".',
        "Invalid syntax! Proc type, ID and options are required.",
    ]
    assert ctl.calls(skip_get=True) == [
        (
            "PUT",
            "/v1/primary/launch",
            {
                "client_id": "5",
                "proc_name": "spp_nfv",
                "eal": {"-l": "1,2", "-m": "512", "--proc-type": "secondary"},
                "app": {"-n": "5", "-s": "127.0.0.1:6666"},
            },
        ),
        (
            "PUT",
            "/v1/primary/launch",
            {
                "client_id": "6",
                "proc_name": "spp_vf",
                "eal": {"-l": "1,4-7", "--no-pci": None, "-m": "512", "--proc-type": "secondary"},
                "app": {"--client-id": "6", "-s": "127.0.0.1:6666", "--vhost-client": None},
            },
        ),
    ]


def test_pri_launch_server_error(spp: Run, ctl: FakeCtl) -> None:
    ctl.routes[("PUT", "/v1/primary/launch")] = (503, "spp_nfv 5 did not register within 20 s.")
    res = spp("pri; launch nfv 5 -l 1,2 -- -n 5")
    assert (res.returncode, res.stdout) == (1, "")
    assert err(res) == ["Error: spp_nfv 5 did not register within 20 s."]


def test_pri_flow(spp: Run, ctl: FakeCtl) -> None:
    rule = {
        "rule_id": 0,
        "attr": {"group": 0, "priority": 0, "ingress": 1, "egress": 0, "transfer": 0},
        "patterns": [{"type": "eth", "spec": {"dst": "11:22:33:44:55:66"}, "last": None, "mask": None}],
        "actions": [{"type": "queue", "conf": {"index": 1}}],
    }
    ctl.routes[("GET", "/v1/primary/status")][1]["phy_ports"][0]["flow"] = [rule]
    ctl.routes[("POST", "/v1/primary/flow_rules/port_id/0")] = (
        200,
        {"result": "success", "message": "Flow rule #0 created", "rule_id": "0"},
    )
    ctl.routes[("DELETE", "/v1/primary/flow_rules/3/port_id/0")] = (
        200,
        {"result": "error", "message": "Flow rule #3 not found"},
    )
    res = spp(
        "pri; flow create phy:0 ingress pattern eth dst is 11:22:33:44:55:66 / end"
        " actions queue index 1 / end",
        "pri; flow list phy:0",
        "pri; flow destroy phy:0 3",
    )
    assert out(res) == ["Flow rule #0 created", "ID\tGroup\tPrio\tAttr\tRule", "0\t0\t0\ti--\tETH => QUEUE"]
    assert err(res) == ["Error: Flow rule #3 not found"]
    assert ctl.calls(skip_get=True)[0] == (
        "POST",
        "/v1/primary/flow_rules/port_id/0",
        {
            "rule": {
                "direction": "ingress",
                "pattern": ["eth dst is 11:22:33:44:55:66"],
                "actions": ["queue index 1"],
            }
        },
    )


# -- nfv ---------------------------------------------------------------------------------------


def test_nfv_status(spp: Run) -> None:
    res = spp("nfv 1; status")
    assert out(res) == [
        "- status: running",
        "- lcore_ids:",
        "  - master: 1",
        "  - slave: 2",
        "- ports:",
        "  - phy:0 -> ring:0",
        "  - phy:1",
        "  - ring:0 -> vhost:1",
        "  - vhost:1",
    ]


def test_nfv_commands_and_rest_calls(spp: Run, ctl: FakeCtl) -> None:
    res = spp(
        "nfv 1; add ring:1",
        "nfv  1 ;del ring:5",
        "nfv 1; patch phy:1 nq 1 ring:1",
        "nfv 1; patch reset",
        "nfv 1; forward",
        "nfv 1; stop",
        "nfv 1; exit",
    )
    assert res.returncode == 0, res.stderr
    assert out(res) == [
        "Add ring:1.",
        "Delete ring:5.",
        "Patch ports (phy:1 nq 1 -> ring:1).",
        "Clear all of patches.",
        "Start forwarding.",
        "Stop forwarding.",
        "Exit nfv 1",
    ]
    assert ctl.calls(skip_get=True) == [
        ("PUT", "/v1/nfvs/1/ports", {"action": "add", "port": "ring:1"}),
        ("PUT", "/v1/nfvs/1/ports", {"action": "del", "port": "ring:5"}),
        ("PUT", "/v1/nfvs/1/patches", {"src": "phy:1nq1", "dst": "ring:1"}),
        ("DELETE", "/v1/nfvs/1/patches", None),
        ("PUT", "/v1/nfvs/1/forward", {"action": "start"}),
        ("PUT", "/v1/nfvs/1/forward", {"action": "stop"}),
        ("DELETE", "/v1/nfvs/1", None),
    ]


def test_nfv_syntax_errors(spp: Run, ctl: FakeCtl) -> None:
    res = spp(
        "nfv 9; status",
        "nfv x; status",
        "nfv 1 status",
        "nfv 1; bogus",
        "nfv 1;",
        "nfv 1; add ring:0",
        "nfv 1; del vhost:1",
        "nfv 1; del phy:1",
        "nfv 1; patch phy:0 nq x ring:0",
        "nfv 1; status extra",
    )
    assert res.returncode == 1
    assert res.stdout == ""
    assert err(res) == [
        '"nfv 9" does not exist.',
        "Invalid command: nfv x;status",
        "Required an ID and ';' before the command.",
        'Invalid command "bogus".',
        'Invalid command "".',
        "'ring:0' is already added.",
        "Cannot delete patched port 'vhost:1'.",
        "Cannot delete phy port 'phy:1'.",
        "Invalid queue number 'x' for 'phy:0'.",
        "'status' takes no arguments, got 'extra'.",
    ]
    assert ctl.calls(skip_get=True) == []


def test_server_errors_are_one_line(spp: Run, ctl: FakeCtl) -> None:
    ctl.routes[("PUT", "/v1/nfvs/1/ports")] = (400, "invalid key(port): foo:1.")
    ctl.routes[("PUT", "/v1/nfvs/1/patches")] = (500, "")
    ctl.routes[("PUT", "/v1/nfvs/1/forward")] = (404, "sec_id 1 not found.")
    ctl.routes[("DELETE", "/v1/nfvs/1")] = (503, '{"message": "nfv 1 did not answer\\nand was dropped."}')
    res = spp("nfv 1; add foo:1", "nfv 1; patch a:1 b:2", "nfv 1; forward", "nfv 1; exit", "nfv 1; status")
    assert res.returncode == 1
    assert err(res) == [
        "Error: invalid key(port): foo:1.",
        "Error: HTTP 500 Internal Server Error",
        "Error: sec_id 1 not found.",
        "Error: nfv 1 did not answer and was dropped.",
    ]
    assert out(res)[0] == "- status: running"  # the batch goes on after failures


def test_request_timeout(spp: Run, ctl: FakeCtl) -> None:
    ctl.routes[("GET", "/v1/nfvs/1")] = (0, 5)  # hangs for 5 s
    res = spp("nfv 1; status", args=("--timeout", "0.5"))
    assert res.returncode == 1
    assert err(res) == [f"Error: no reply from spp-ctl at {ctl.addr} within 0.5 s (GET /v1/nfvs/1)"]


# -- vf / mirror / pcap --------------------------------------------------------------------------


def test_vf_commands_and_rest_calls(spp: Run, ctl: FakeCtl) -> None:
    res = spp(
        "vf 2; component start fwd2 5 forward",
        "vf 2; component stop fwd1",
        "vf 2; port add phy:0 nq 1 rx fwd1 add_vlantag 101 3",
        "vf 2; port del ring:1 tx fwd1",
        "vf 2; port add ring:2 tx fwd1 del_vlantag",
        "vf 2; classifier_table add mac FA:16:3E:7D:CC:35 ring:2",
        "vf 2; classifier_table del vlan 101 default phy:0 nq 2",
        "vf 2; exit",
    )
    assert res.returncode == 0, res.stderr
    assert out(res) == [
        "Succeeded to start component 'fwd2' on core:5",
        "Succeeded to delete component 'fwd1'",
        "Succeeded to add port",
        "Succeeded to del port",
        "Succeeded to add port",
        "Succeeded to add",
        "Succeeded to del",
        "Exit vf 2.",
    ]
    ports = "/v1/vfs/2/components/fwd1/ports"
    assert ctl.calls(skip_get=True) == [
        ("POST", "/v1/vfs/2/components", {"name": "fwd2", "core": 5, "type": "forward"}),
        ("DELETE", "/v1/vfs/2/components/fwd1", None),
        (
            "PUT",
            ports,
            {
                "action": "attach",
                "port": "phy:0nq1",
                "dir": "rx",
                "vlan": {"operation": "add", "id": 101, "pcp": 3},
            },
        ),
        ("PUT", ports, {"action": "detach", "port": "ring:1", "dir": "tx", "vlan": {}}),
        ("PUT", ports, {"action": "attach", "port": "ring:2", "dir": "tx", "vlan": {"operation": "del"}}),
        (
            "PUT",
            "/v1/vfs/2/classifier_table",
            {"action": "add", "type": "mac", "mac_address": "FA:16:3E:7D:CC:35", "port": "ring:2"},
        ),
        (
            "PUT",
            "/v1/vfs/2/classifier_table",
            {"action": "del", "type": "vlan", "vlan": "101", "mac_address": "default", "port": "phy:0nq2"},
        ),
        ("DELETE", "/v1/vfs/2", None),
    ]


def test_vf_status_and_errors(spp: Run, ctl: FakeCtl) -> None:
    ctl.routes[("POST", "/v1/vfs/2/components")] = (400, "command error: Invalid value (core)")
    res = spp(
        "vf 2; status",
        "vf 2; component start fwd2 99 forward",
        "vf 2; component start fwd2 x forward",
        "vf 2; port add ring:0 up fwd1",
        "vf 2; classifier_table add ip 1.2.3.4 ring:0",
        "vf 7; status",
    )
    assert out(res)[:2] == ["Basic Information:", "  - client-id: 2"]
    assert "    - rx: phy:1 (vlan operation: add, id: 101, pcp: 3)" in out(res)
    assert err(res) == [
        "Error: command error: Invalid value (core)",
        "Invalid core 'x' (a number is required).",
        "Invalid direction 'up' (rx or tx). Usage: port add|del PORT [nq Q] rx|tx NAME"
        " [add_vlantag VID PCP|del_vlantag]",
        "Usage: classifier_table add|del mac MAC|default PORT"
        " | classifier_table add|del vlan VID MAC|default PORT",
        '"vf 7" does not exist.',
    ]


def test_mirror_and_pcap(spp: Run, ctl: FakeCtl) -> None:
    res = spp(
        "mirror 3; status",
        "mirror 3; component start mr2 4 mirror",
        "mirror 3; port add ring:6 tx mr1",
        "mirror 3; port add ring:6 tx mr1 add_vlantag 1 1",
        "mirror 3; exit",
        "pcap 4; start",
        "pcap 4; stop",
        "pcap 4; exit",
        "pcap 4; status",
    )
    lines = out(res)
    assert lines[:11] == [
        "Basic Information:",
        "  - client-id: 3",
        "  - ports: [ring:0, ring:4, ring:5]",
        "  - lcore_ids:",
        "    - master: 1",
        "    - slaves: [2, 3]",
        "Components:",
        "  - core:2 'mr1' (type: mirror)",
        "    - rx: ring:0",
        "    - tx: [ring:4, ring:5]",
        "  - core:3 '' (type: unuse)",
    ]
    assert lines[11:17] == [
        "Succeeded to start component 'mr2' on core:4",
        "Succeeded to add port",
        "Exit mirror 3.",
        "Start packet capture.",
        "Stop packet capture.",
        "Exit pcap 4.",
    ]
    assert lines[17:20] == ["Basic Information:", "  - client-id: 4", "  - status: running"]
    assert err(res) == ["Usage: port add|del PORT [nq Q] rx|tx NAME"]
    assert ctl.calls(skip_get=True) == [
        ("POST", "/v1/mirrors/3/components", {"name": "mr2", "core": 4, "type": "mirror"}),
        ("PUT", "/v1/mirrors/3/components/mr1/ports", {"action": "attach", "port": "ring:6", "dir": "tx"}),
        ("DELETE", "/v1/mirrors/3", None),
        ("PUT", "/v1/pcaps/4/capture", {"action": "start"}),
        ("PUT", "/v1/pcaps/4/capture", {"action": "stop"}),
        ("DELETE", "/v1/pcaps/4", None),
    ]


# -- batch sources, recipes, record/playback, history ---------------------------------------------


def test_stdin_batch_and_exit_status(spp: Run, ctl: FakeCtl) -> None:
    res = spp(stdin="# configure\nnfv 1; forward\n\n// done\n")
    assert (res.returncode, out(res), res.stderr) == (0, ["# configure", "Start forwarding.", "// done"], "")
    res = spp(stdin="nfv 1; forward\nnfv 2; forward\nnfv 1; stop\n")
    assert res.returncode == 1
    assert out(res) == ["Start forwarding.", "Stop forwarding."]
    assert err(res) == ['"nfv 2" does not exist.']


def test_stop_on_error_and_exit(spp: Run) -> None:
    res = spp("nfv 2; stop", "nfv 1; stop", args=("--stop-on-error",))
    assert (res.returncode, out(res)) == (1, [])
    res = spp("nfv 1; stop", "exit", "nfv 1; forward")
    assert (res.returncode, out(res)) == (0, ["Stop forwarding.", "Thank you for using Soft Patch Panel"])


def test_recipe_file_record_and_playback(spp: Run, ctl: FakeCtl, tmp_path: Path) -> None:
    recipe = tmp_path / "l2fwd.rcps"
    recipe.write_text(
        "# Configure as L2fwd\nnfv 1; patch phy:0 phy:1\nnfv 1; patch phy:1 phy:0\nnfv 1; forward\n"
    )
    res = spp(args=("--file", str(recipe)))
    assert out(res) == [
        "# Configure as L2fwd",
        "Patch ports (phy:0 -> phy:1).",
        "Patch ports (phy:1 -> phy:0).",
        "Start forwarding.",
    ]
    ctl.requests.clear()
    res = spp(
        "record rec.rcps",
        "nfv 1; stop",
        "nfv 1; patch reset",
        "vf 2; exit",
        "playback l2fwd.rcps",
        "playback nope.rcps",
    )
    assert out(res) == [
        "Stop forwarding.",
        "Clear all of patches.",
        "Exit vf 2.",
        "Closing file",
        "# nfv 1; patch phy:0 phy:1",
        "Patch ports (phy:0 -> phy:1).",
        "# nfv 1; patch phy:1 phy:0",
        "Patch ports (phy:1 -> phy:0).",
        "# nfv 1; forward",
        "Start forwarding.",
    ]
    assert err(res) == ["Error: File does not exist."]
    assert (tmp_path / "rec.rcps").read_text() == "nfv 1; stop\nnfv 1; patch reset\nvf 2; exit\n"
    paths = [
        "nfvs/1/forward",
        "nfvs/1/patches",
        "vfs/2",
        "nfvs/1/patches",
        "nfvs/1/patches",
        "nfvs/1/forward",
    ]
    assert [c[1] for c in ctl.calls(skip_get=True)] == [f"/v1/{p}" for p in paths]
    assert spp("record").stderr == "Record file is required!\n"


def test_history_and_redo_in_batch(spp: Run, ctl: FakeCtl, tmp_path: Path) -> None:
    res = spp("status", "nfv 1; forward", "history", "redo 2", "redo 9")
    assert out(res)[10:] == ["Start forwarding.", "  1  status", "  2  nfv 1; forward", "Start forwarding."]
    assert err(res) == ["Usage: redo N, with N from 1 to 2 (see 'history')."]
    assert not (tmp_path / ".spp_history").exists()  # batch runs never touch the user's history


# -- topology ----------------------------------------------------------------------------------


def test_topo_dot_and_subgraph(spp: Run) -> None:
    res = spp("topo_subgraph", "topo_subgraph add vm1 vhost_1,ring:0", "topo_subgraph", "topo dot")
    assert res.returncode == 0, res.stderr
    lines = out(res)
    assert lines[:3] == ["No subgraph.", "Add subgraph 'vm1'", 'label: vm1\tsubgraph: "vhost:1;ring:0"']
    dot = lines[3:]
    assert dot[:3] == ["digraph spp{", "newrank=true;", 'node[shape="rectangle", style="filled"];']
    assert dot[-1] == "}"
    for line in [
        'phy_0[label="phy:0", fillcolor="white"];',
        'ring_0[label="ring:0", fillcolor="yellow"];',
        'vhost_1[label="vhost:1", fillcolor="antiquewhite"];',
        'spppcap_4[label="spppcap:4", fillcolor="gold2"];',
        "{rank=max; phy_0}",
        'phy_0 -> ring_0[label="nfv:1", color="green", style="solid"];',
        'ring_0 -> vhost_1[label="nfv:1", color="green", style="solid"];',
        'phy_1 -> ring_1[label="vf:2:f", color="orange", style="solid"];',
        'ring_1 -> ring_2[label="vf:2:c", color="orange", style="solid"];',
        'ring_1 -> ring_3[label="vf:2:c", color="orange", style="solid"];',
        'ring_0 -> ring_4[label="vf:3", color="chocolate", style="solid"];',
        'phy_0 -> spppcap_4[label="pcap:4", color="black", style="solid"];',
    ]:
        assert line in dot
    cluster = next(x for x in dot if x.startswith("subgraph cluster0"))
    assert cluster.endswith('; subgraph cluster1 {label="vm1" vhost_1;ring_0}}')
    res = spp("topo_subgraph del vm2", "topo_subgraph add vm1")
    assert err(res) == [
        "No such subgraph 'vm2'.",
        "Usage: topo_subgraph [add LABEL vhost:1,vhost:2 | del LABEL]",
    ]


def test_topo_term(spp: Run) -> None:
    res = spp("topo term")
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert (
        "nfv:1 [running]\n  +-------+   +--------+   +---------+\n  | phy:0 |-->| ring:0 |-->| vhost:1 |\n"
        in text
    )
    assert "  not patched: phy:1" in text
    assert "primary (forwarder) [idling]" in text
    assert "  cls1 (classifier)\n    +--------+      +--------+\n    | ring:1 |--+-->| ring:2 |" in text
    assert "pcap:4 [running]" in text and "| capture (pcap:4) |" in text
    assert "links between processes:" in text
    assert "  primary, nfv:1 --> ring:0 --> nfv:1, mirror:3" in text


def test_topo_files(spp: Run, ctl: FakeCtl, tmp_path: Path) -> None:
    files = ("topo t.dot", "topo t.json", "topo t.yml", "topo t.svg", "topo t.mmd", "topo t.txt")
    res = spp(*files, "topo", "topo http")
    assert out(res) == [
        "Create topology: 't.dot'",
        "Create topology: 't.json'",
        "Create topology: 't.yml'",
        "Create topology: 't.svg'",
        "Create topology: 't.mmd'",
    ]
    assert err(res) == [
        "Invalid file type 'txt': use dot, svg, mmd, json, yaml, png, jpg, bmp, gif or pdf.",
        "Usage: topo term | topo dot | topo http | topo FILE[.dot|.svg|.mmd|.json|.yaml|.png|.jpg] [TYPE]",
        f"spp-ctl at {ctl.addr} serves no web page (HTTP 404 for /): start spp-ctl with --web, "
        "or use 'topo term' or 'topo FILE.svg'.",
    ]
    assert (tmp_path / "t.mmd").read_text().startswith("flowchart LR\n")
    assert "port_phy_0 -->|nfv:1| port_ring_0" in (tmp_path / "t.mmd").read_text()
    assert (tmp_path / "t.dot").read_text().startswith("digraph spp{\n")
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["nfv"][0]["client-id"] == 1 and data["pcap"][0]["status"] == "running"
    assert yaml.safe_load((tmp_path / "t.yml").read_text()) == data
    assert "<svg" in (tmp_path / "t.svg").read_text()


def test_topo_without_graphviz_or_secondaries(spp: Run, ctl: FakeCtl, tmp_path: Path) -> None:
    no_graphviz = {**cli_env(tmp_path), "PATH": os.path.dirname(sys.executable)}
    res = subprocess.run(
        [sys.executable, "-m", "spp.control.cli.main", "-b", ctl.addr, "-e", "topo t.png"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=no_graphviz,
        timeout=30,
        check=False,
    )
    assert res.returncode == 1
    assert err(res) == [
        "Cannot create 't.png': graphviz 'dot' is not installed. "
        "Use 'topo term', 'topo dot' or a .dot/.json/.yaml file instead."
    ]
    assert not (tmp_path / "t.png").exists()
    ctl.routes[("GET", "/v1/processes")] = (200, [{"type": "primary"}])
    res = spp("topo dot", "topo term")
    assert err(res) == ["No secondary process exist!"]


# -- config, server, plugins, bye, helpers ---------------------------------------------------------


def test_config(spp: Run) -> None:
    res = spp(
        "config sec_pcap",
        'config sec_mem "-m 1024"',
        "config sec_mem 1024",
        "config prompt 'x> '",
        "config nope",
    )
    assert out(res) == [
        '- sec_pcap_nof_lcores: "2"\t# Default num of lcores for workers of spp_pcap',
        '- sec_pcap_port: "phy:0"\t# Default captured port',
        'Set sec_mem: "-m 1024"',
        'Set prompt: "x> "',
    ]
    assert err(res) == ['Invalid value "1024" for "sec_mem"', 'No config key starts with "nope".']
    assert len(out(spp("config"))) == 14


def test_config_file(spp: Run, tmp_path: Path) -> None:
    (tmp_path / "my.yml").write_text("max_secondary:\n  val: 4\n  desc: few\n")
    assert out(spp("config max_sec", args=("--config", "my.yml"))) == ['- max_secondary: "4"\t# few']
    res = spp("status", args=("--config", "missing.yml"))
    assert res.returncode == 1
    assert err(res) == ["Error: cannot read config file 'missing.yml': No such file or directory"]


def test_servers(spp: Run, ctl: FakeCtl) -> None:
    other = FakeCtl()
    third = FakeCtl()
    try:
        other.routes[("GET", "/v1/processes")] = (200, [{"type": "nfv", "client-id": 7}])
        dead = closed_port()
        res = spp(
            "server",
            "server 2",
            "status",
            "server del 2",
            "server del 1",
            "server list",
            f"server add {other.addr}",
            f"server add {ctl.addr}",
            f"server add 127.0.0.1:{dead}",
            f"server add {third.addr}",
            "server 3",
            "server 4",
            args=("-b", other.addr),
        )
        assert out(res) == [
            f"  1: {ctl.addr} *",
            f"  2: {other.addr}",
            f'Switch spp-ctl to "2: {other.addr}".',
            "- spp-ctl:",
            f"  - address: {other.addr}",
            "- primary:",
            "  - status: not running",
            "- secondary:",
            "  - processes:",
            "    1: nfv:7",
            f'Unregistered spp-ctl "{ctl.addr}".',
            f"  1: {other.addr} *",
            f'Registered spp-ctl "{ctl.addr}".',
            f'Registered spp-ctl "{third.addr}".',
            f'Switch spp-ctl to "3: {third.addr}".',
        ]
        assert err(res) == [
            'Cannot del server "2" in use!',
            f'"{other.addr}" is already registered.',
            f'Is not spp-ctl on "127.0.0.1:{dead}", nor correct address?',
            'Invalid server index "4" (1-3).',
        ]
    finally:
        other.close()
        third.close()


def test_plugins(spp: Run) -> None:
    res = spp(
        "hello alice",
        "load_cmd hello",
        "hello alice",
        "hello",
        "load_cmd nope",
        "load_cmd ../x",
        "help hello",
    )
    assert out(res) == ["Module 'hello' loaded.", "Hello, alice!", "Say hello to the given user: hello NAME"]
    errs = err(res)
    assert errs[0] == "Invalid command: 'hello'. Type 'help' to list commands."
    assert errs[1] == "name is required!"
    assert errs[2].startswith("No plugin 'nope' in ") and errs[2].endswith("spp/control/cli/plugins.")
    assert errs[3] == "Invalid plugin name '../x'."


def test_bye(spp: Run, ctl: FakeCtl) -> None:
    res = spp("bye sec", "bye all", "bye now", "bye", "status")
    assert out(res) == [
        "Closing secondary ...",
        "Exit nfv 1",
        "Exit vf 2.",
        "Exit mirror 3.",
        "Exit pcap 4.",
        "Closing secondary ...",
        "Exit nfv 1",
        "Exit vf 2.",
        "Exit mirror 3.",
        "Exit pcap 4.",
        "Closing primary ...",
        "Exit primary",
        "Thank you for using Soft Patch Panel",
    ]
    assert err(res) == ["Usage: bye [sec|all]"]
    assert [c[:2] for c in ctl.calls(skip_get=True)][-5:] == [
        ("DELETE", "/v1/nfvs/1"),
        ("DELETE", "/v1/vfs/2"),
        ("DELETE", "/v1/mirrors/3"),
        ("DELETE", "/v1/pcaps/4"),
        ("DELETE", "/v1/primary"),
    ]


def test_file_helpers_never_use_a_shell(spp: Run, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    res = spp(
        "mkdir d1",
        "cd d1",
        "pwd",
        "cd ..",
        "ls",
        "cat notes.txt",
        "cat notes.txt; touch pwned",
        "cd /nonexistent",
        "env HOME",
    )
    assert out(res) == [
        str(tmp_path / "d1"),
        str(tmp_path / "d1"),
        str(tmp_path),
        "d1/  notes.txt",
        "hello",
        f"HOME={tmp_path}",
    ]
    assert err(res) == ["No such a file: 'notes.txt;'.", "No such a directory."]
    assert not (tmp_path / "pwned").exists()


def test_wait_pri(spp: Run, ctl: FakeCtl) -> None:
    res = spp("status", args=("--wait-pri",))
    assert out(res)[0] == "Waiting for spp_primary is ready ... OK! (0.0[sec])"
    ctl.routes[("GET", "/v1/processes")] = (200, [])
    res = spp("status", args=("--wait-pri", "--wait-pri-timeout", "1"))
    assert out(res)[0] == "Waiting for spp_primary is ready ..... Timeout! (1.0[sec])"
    assert res.returncode == 1
