"""spp-ctl's process table: registration, ID clashes, replacement, liveness, and its command line.

Every test runs its own spp-ctl subprocess (fresh table) on free ports of 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from spp.control.ctl.main import parse_args
from tests.ctl_doubles import ROOT, CtlServer, FakeProcess


@pytest.fixture
def ctl() -> Iterator[CtlServer]:
    server = CtlServer(timeout=1.0)
    yield server
    server.close()


PROBE_FREE = {
    "nfv": ("PUT", "forward"),
    "vf": ("PUT", "classifier_table"),
    "mirror": ("POST", "components"),
    "pcap": ("PUT", "capture"),
}


def present(ctl: CtlServer, kind: str, client_id: int) -> bool:
    """Is the secondary registered? Asked without probing it: the lookup answers before any body check."""
    method, tail = PROBE_FREE[kind]
    res = ctl.http.request(method, f"/v1/{kind}s/{client_id}/{tail}", content=b"x")
    assert res.status_code in (400, 404), res.text
    return res.status_code == 400


def primary_present(ctl: CtlServer) -> bool:
    res = ctl.http.put("/v1/primary/patches", content=b"{}")
    return res.status_code == 400


def test_secondaries_register_by_their_get_client_id_reply(ctl):
    peers = []
    for kind, client_id, kw in [("nfv", 1, {"split": 4}), ("vf", 2, {}), ("mirror", 3, {}), ("pcap", 4, {})]:
        peers.append(ctl.connect(kind, client_id, **kw))  # nfv: padded reply in 4 pieces; others unpadded
        assert ctl.wait_until(lambda k=kind, i=client_id: present(ctl, k, i)), ctl.log_text()[-2000:]
    expected = [{"type": t, "client-id": i} for t, i in [("nfv", 1), ("vf", 2), ("mirror", 3), ("pcap", 4)]]
    assert ctl.processes() == expected
    for peer in peers:
        assert peer.commands[0] == "_get_client_id"


@pytest.mark.parametrize(
    "reply",
    [
        {"results": [{"result": "success"}], "client_id": 1, "process_type": "dpdk"},
        {"results": [{"result": "success"}], "process_type": "nfv"},
        {"results": [{"result": "success"}], "client_id": 0, "process_type": "nfv"},
        "_get_client_id",
    ],
)
def test_bad_get_client_id_reply_closes_the_connection(ctl, reply):
    peer = FakeProcess(ctl.sec_port, "nfv", 1, padded=True, replies={"_get_client_id": reply})
    assert peer.eof.wait(3), "spp-ctl kept a process that did not identify itself"
    assert ctl.processes() == []


def test_id_clash_with_live_holder_rejects_newcomer(ctl):
    old = ctl.connect("nfv", 5)
    assert ctl.wait_until(lambda: present(ctl, "nfv", 5))
    new = ctl.connect("vf", 5)
    assert new.eof.wait(3), "the newcomer should have been closed"
    assert new.commands == ["_get_client_id"]
    assert "status" in old.commands  # the holder was probed
    assert ctl.processes() == [{"type": "nfv", "client-id": 5}]
    old.clear()
    assert ctl.http.get("/v1/nfvs/5").status_code == 200
    assert old.commands == ["status"]
    assert ctl.wait_until(lambda: "client id 5 is already used by nfv(5)" in ctl.log_text())


def test_id_clash_with_hung_holder_replaces_it_in_place(ctl):
    first = ctl.connect("nfv", 1)
    assert ctl.wait_until(lambda: present(ctl, "nfv", 1))
    hung = ctl.connect("nfv", 2)
    assert ctl.wait_until(lambda: present(ctl, "nfv", 2))
    last = ctl.connect("nfv", 3)
    assert ctl.wait_until(lambda: present(ctl, "nfv", 3))
    hung.silent = True  # connected but no longer answering
    new = ctl.connect("vf", 2)
    assert ctl.wait_until(lambda: present(ctl, "vf", 2), timeout=5)
    assert hung.eof.wait(3), "the hung holder's connection should have been closed"
    assert not new.eof.is_set()
    assert ctl.processes() == [
        {"type": "nfv", "client-id": 1},
        {"type": "vf", "client-id": 2},
        {"type": "nfv", "client-id": 3},
    ]
    assert first and last


def test_reconnect_after_holder_died_is_accepted(ctl):
    old = ctl.connect("nfv", 7)
    assert ctl.wait_until(lambda: present(ctl, "nfv", 7))
    old.close()
    new = ctl.connect("nfv", 7)
    assert ctl.wait_until(lambda: present(ctl, "nfv", 7))
    new.clear()
    assert ctl.http.get("/v1/nfvs/7").status_code == 200
    assert new.commands == ["status"]


@pytest.mark.parametrize("how", ["close", "kill"])
def test_idle_secondary_death_noticed_within_a_second(ctl, how):
    peer = ctl.connect("vf", 3)
    assert ctl.wait_until(lambda: present(ctl, "vf", 3))
    peer.clear()
    getattr(peer, how)()
    t0 = time.monotonic()
    assert ctl.wait_until(lambda: not present(ctl, "vf", 3), timeout=1.0)
    assert time.monotonic() - t0 < 1.0
    assert peer.commands == []  # noticed without sending it anything


def test_killed_process_dropped_from_processes(ctl):
    """A real process (not a socket in this test) that dies by SIGKILL."""
    script = textwrap.dedent(f"""
        import socket, json, time
        s = socket.create_connection(("127.0.0.1", {ctl.sec_port}))
        while True:
            cmd = s.recv(65536).decode()
            if not cmd:
                break
            reply = {{"results": [{{"result": "success"}}], "client_id": 9, "process_type": "nfv"}}
            s.sendall(json.dumps(reply).encode().ljust(32768, b"\\0"))
        """)
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        assert ctl.wait_until(lambda: {"type": "nfv", "client-id": 9} in ctl.processes())
        child.kill()
        child.wait(5)
        t0 = time.monotonic()
        assert ctl.wait_until(lambda: not present(ctl, "nfv", 9), timeout=1.0)
        assert time.monotonic() - t0 < 1.0
        assert ctl.processes() == []
    finally:
        child.kill()
        child.wait(5)


def test_processes_probe_drops_unresponsive_secondary(ctl):
    alive = ctl.connect("nfv", 1)
    assert ctl.wait_until(lambda: len(ctl.processes()) == 1)  # registered first: listed first
    mute = ctl.connect("vf", 2)
    assert ctl.wait_until(lambda: len(ctl.processes()) == 2)
    mute.silent = True
    # The listing does not wait for the mute one; its probe goes on and drops it once overdue.
    assert ctl.processes()[0] == {"type": "nfv", "client-id": 1}
    assert mute.eof.wait(5)
    assert ctl.processes() == [{"type": "nfv", "client-id": 1}]
    assert alive.commands[-1] == "status"


def test_cpu_usage_drops_unresponsive_primary(ctl):
    primary = ctl.connect("primary")
    assert ctl.wait_until(lambda: primary_present(ctl))
    primary.silent = True
    res = ctl.http.get("/v1/cpu_usage")
    assert (res.status_code, res.json()) == (200, [])
    assert ctl.wait_until(lambda: not primary_present(ctl))


def test_live_primary_is_kept_and_only_a_dead_one_replaced(ctl):
    old = ctl.connect("primary")
    assert ctl.wait_until(lambda: primary_present(ctl))
    intruder = ctl.connect("primary", status={"master-lcore": 9, "lcores": [9]})
    assert intruder.eof.wait(5), "a second primary must be refused while the first one answers"
    assert intruder.commands == []  # it was sent nothing
    res = ctl.http.get("/v1/primary/status")
    assert res.json() == old.status
    old.silent = True  # hung: the next primary may take over
    new = ctl.connect("primary", status={"master-lcore": 3, "lcores": [3]})
    assert old.eof.wait(5), "the hung primary's connection should be closed"
    res = ctl.http.get("/v1/primary/status")
    assert res.json() == {"master-lcore": 3, "lcores": [3]}
    assert new.commands == ["status"]
    assert ctl.processes() == [{"type": "primary"}]
    new.close()
    assert ctl.wait_until(lambda: not primary_present(ctl), timeout=1.0)


def test_primary_is_listed_first_and_status_reaches_it(ctl):
    nfv = ctl.connect("nfv", 4)
    assert ctl.wait_until(lambda: present(ctl, "nfv", 4))
    primary = ctl.connect("primary", split=8)
    assert ctl.wait_until(lambda: primary_present(ctl))
    # SPP's dict order is registration order: the primary is listed where it registered.
    assert ctl.processes() == [{"type": "nfv", "client-id": 4}, {"type": "primary"}]
    res = ctl.http.get("/v1/primary/status")
    assert res.text == json.dumps(primary.status)
    assert nfv


def test_restart_on_same_ports_and_busy_port(ctl):
    peer = ctl.connect("nfv", 1)
    assert ctl.wait_until(lambda: present(ctl, "nfv", 1))
    ctl.stop()  # connections left in TIME_WAIT on our side
    assert peer.eof.wait(3)
    again = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spp.control.ctl.main",
            "-p",
            str(ctl.pri_port),
            "-s",
            str(ctl.sec_port),
            "-a",
            str(ctl.api_port),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )
    try:
        assert ctl.wait_until(lambda: _listening(ctl.api_port), timeout=10), "SO_REUSEADDR: rebind failed"
        busy = subprocess.run(
            [
                sys.executable,
                "-m",
                "spp.control.ctl.main",
                "-p",
                str(ctl.pri_port),
                "-s",
                str(ctl.sec_port),
                "-a",
                str(ctl.api_port),
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=20,
        )
        assert busy.returncode == 1
        assert b"cannot listen on 127.0.0.1" in busy.stderr
    finally:
        again.terminate()
        again.wait(5)
        assert again.stderr is not None
        again.stderr.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_command_line_defaults():
    args = parse_args([])
    assert (args.bind_addr, args.pri_port, args.sec_port, args.api_port) == ("127.0.0.1", 5555, 6666, 7777)
    assert (args.log_level, args.command_timeout, args.launch_timeout) == ("INFO", 10.0, 20.0)
    args = parse_args(["-b", "0.0.0.0", "-p", "1", "-s", "2", "-a", "3", "--log-level", "debug"])
    assert (args.bind_addr, args.pri_port, args.sec_port, args.api_port, args.log_level) == (
        "0.0.0.0",
        1,
        2,
        3,
        "DEBUG",
    )
