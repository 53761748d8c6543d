"""spp-ctl's control plane under attack: foreign users on the wire ports, connection floods,
DNS rebinding and CSRF on the REST API, absurd ids and bodies, stopped processes, log floods.

Every test performs the attack against a real spp-ctl subprocess and checks that it is refused
and that the legitimate processes are unaffected.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ctl_doubles import CtlServer
from tests.netutil import veth_pair_in_netns

NOBODY = 65534

INTRUDER = textwrap.dedent("""
    import json, socket, sys
    port, kind, client_id = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    got, eof = [], False
    try:
        while True:
            data = s.recv(65536)
            if not data:
                eof = True
                break
            got.append(data.decode(errors="replace"))
            reply = {"results": [{"result": "success"}], "client_id": client_id, "process_type": kind}
            if got[-1] == "status":
                reply = {"client-id": client_id, "status": "idling", "ports": [], "patches": []}
            s.sendall(json.dumps(reply).encode().ljust(32768, b"\\0"))
    except OSError:
        eof = True
    print(json.dumps({"uid": __import__("os").getuid(), "commands": got, "eof": eof}))
""")


def as_nobody(*argv: str) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


def run_intruder(port: int, kind: str, client_id: int) -> dict:
    out = subprocess.run(
        as_nobody("/usr/bin/python3", "-c", INTRUDER, str(port), kind, str(client_id)),
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")


@pytest.fixture
def ctl() -> Iterator[CtlServer]:
    server = CtlServer(timeout=1.0)
    yield server
    server.close()


def listed(ctl: CtlServer) -> list[dict]:
    return ctl.processes()


# -- registration by uid ------------------------------------------------------------------------


@needs_root
def test_other_user_cannot_take_over_the_primary(ctl):
    primary = ctl.connect("primary")
    assert ctl.wait_until(lambda: listed(ctl) == [{"type": "primary"}])
    primary.clear()
    result = run_intruder(ctl.pri_port, "primary", 0)
    assert result == {"uid": NOBODY, "commands": [], "eof": True}
    # The real primary is still registered and is the one that gets the commands.
    res = ctl.http.get("/v1/primary/status")
    assert res.status_code == 200 and res.json() == primary.status
    assert primary.commands == ["status"]
    assert not primary.eof.is_set()
    assert "uid 65534 is neither spp-ctl's" in ctl.log_text()


@needs_root
def test_other_user_cannot_register_without_a_primary(ctl):
    intruder = subprocess.Popen(
        as_nobody("/usr/bin/python3", "-c", INTRUDER, str(ctl.pri_port), "primary", "0"),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Refused: it is hung up on at once. Accepted: it would be listed while it stays connected.
        assert ctl.wait_until(lambda: intruder.poll() is not None or listed(ctl) != [], timeout=15)
        assert listed(ctl) == []
        out, _ = intruder.communicate(timeout=15)
        assert json.loads(out) == {"uid": NOBODY, "commands": [], "eof": True}
    finally:
        intruder.kill()
        intruder.wait(5)
    res = ctl.http.put(
        "/v1/primary/launch",
        json={"client_id": 1, "proc_name": "spp_nfv", "eal": {"-l": "1,2"}, "app": {"-n": 1}},
    )
    assert res.status_code == 404  # no primary: nobody receives the launch


@needs_root
def test_other_user_cannot_claim_a_free_or_a_taken_secondary_id(ctl):
    nfv = ctl.connect("nfv", 1)
    assert ctl.wait_until(lambda: {"type": "nfv", "client-id": 1} in listed(ctl))
    nfv.clear()
    for client_id in (1, 2):  # taken, free
        result = run_intruder(ctl.sec_port, "nfv", client_id)
        assert result == {"uid": NOBODY, "commands": [], "eof": True}, client_id
    assert listed(ctl) == [{"type": "nfv", "client-id": 1}]
    assert ctl.http.get("/v1/nfvs/1").status_code == 200
    assert set(nfv.commands) == {"status"}  # the listing's probes and the GET, nothing else
    assert ctl.http.get("/v1/nfvs/2").status_code == 404


def test_same_user_processes_still_register(ctl):
    """Our own user's processes (here: this test's fake C processes) are unaffected by the check."""
    ctl.connect("primary")
    vf = ctl.connect("vf", 3)
    assert ctl.wait_until(lambda: len(listed(ctl)) == 2)
    assert vf.commands[0] == "_get_client_id"


@needs_root
def test_refusals_are_rate_limited_in_the_log(ctl):
    # A refused C process retries every second; a flood of retries must not flood the log.
    script = textwrap.dedent(f"""
        import socket
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", {ctl.sec_port}))
            s.recv(10)
            s.close()
    """)
    subprocess.run(as_nobody("/usr/bin/python3", "-c", script), check=True, timeout=60)
    assert ctl.wait_until(lambda: "Refused a secondary connection" in ctl.log_text())
    lines = [line for line in ctl.log_text().splitlines() if "Refused a secondary connection" in line]
    assert 1 <= len(lines) <= 5, lines


REMOTE = textwrap.dedent("""
    import json, socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    got = []
    try:
        while True:
            data = s.recv(65536)
            if not data:
                break
            got.append(data.decode(errors="replace"))
            reply = {"results": [{"result": "success"}], "client_id": 5, "process_type": "nfv"}
            if got[-1] == "status":
                reply = {"client-id": 5, "status": "idling", "ports": [], "patches": []}
            s.sendall(json.dumps(reply).encode().ljust(32768, b"\\0"))
    except OSError:
        pass
    print(json.dumps(got))
""")


@needs_root
@pytest.mark.parametrize("allowed", [False, True])
def test_processes_on_other_hosts_register_only_with_the_explicit_option(allowed):
    """A peer in another network namespace is another host to spp-ctl: its user is unknown."""
    third = 1 + secrets.randbelow(250)
    host_ip, peer_ip = f"10.251.{third}.1", f"10.251.{third}.2"
    with veth_pair_in_netns(host_ip=f"{host_ip}/30", ns_ip=f"{peer_ip}/30") as veth:
        extra = ("-b", "0.0.0.0", *(["--allow-remote-processes"] if allowed else []))
        server = CtlServer(*extra)
        peer = subprocess.Popen(
            ["ip", "netns", "exec", veth.ns, sys.executable, "-c", REMOTE, host_ip, str(server.sec_port)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            entry = {"type": "nfv", "client-id": 5}
            assert server.wait_until(lambda: peer.poll() is not None or entry in server.processes(), 15)
            if allowed:
                assert server.processes() == [entry]
                assert server.http.get("/v1/nfvs/5").status_code == 200
            else:
                out, _ = peer.communicate(timeout=15)
                assert json.loads(out) == []  # hung up on before being asked anything
                assert server.processes() == []
                assert "not a process of this host" in server.log_text()
        finally:
            peer.kill()
            peer.wait(5)
            server.close()


# -- floods -------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def many_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_thousand_idle_connections_cost_little(ctl, many_fds):
    assert ctl.proc is not None
    nfv = ctl.connect("nfv", 1)
    assert ctl.wait_until(lambda: listed(ctl) == [{"type": "nfv", "client-id": 1}])
    before = rss_kib(ctl.proc.pid)
    socks = []
    try:
        for i in range(1000):
            port = ctl.sec_port if i % 2 else ctl.pri_port
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        # Each idle connection also pushes what a registration could carry and more.
        for s in socks[:200]:
            s.setblocking(False)
            with contextlib.suppress(OSError):
                s.send(b"{" * 65536)
        res = ctl.http.get("/v1/processes", timeout=10)
        assert res.status_code == 200
        assert {"type": "nfv", "client-id": 1} in res.json()
        assert ctl.http.get("/v1/nfvs/1", timeout=10).status_code == 200
        growth = rss_kib(ctl.proc.pid) - before
        assert growth < 40 * 1024, f"spp-ctl grew by {growth} KiB"
    finally:
        for s in socks:
            s.close()
    # Once the flood is gone, a new process registers as usual.
    ctl.connect("vf", 2)
    assert ctl.wait_until(lambda: {"type": "vf", "client-id": 2} in listed(ctl), timeout=15)
    assert not nfv.eof.is_set()


def test_unregistered_connection_cannot_make_spp_ctl_buffer_megabytes(ctl):
    assert ctl.proc is not None
    before = rss_kib(ctl.proc.pid)
    s = socket.create_connection(("127.0.0.1", ctl.sec_port), timeout=10)
    sent = 0
    chunk = b"[" * 65536
    with pytest.raises(OSError):  # spp-ctl hangs up long before 64 MiB
        while sent < 64 * 1024 * 1024:
            s.sendall(chunk)
            sent += len(chunk)
    s.close()
    assert sent < 16 * 1024 * 1024
    assert rss_kib(ctl.proc.pid) - before < 16 * 1024


# -- REST: host, origin, ids, bodies ---------------------------------------------------------------


def test_dns_rebinding_host_is_refused(ctl):
    primary = ctl.connect("primary")
    assert ctl.wait_until(lambda: listed(ctl) == [{"type": "primary"}])
    primary.clear()
    for host in ("evil.example", "evil.example:7777", "127.0.0.1.nip.io"):
        res = ctl.http.get("/v1/primary/status", headers={"Host": host})
        assert res.status_code == 403, host
        assert "is not served" in res.text and "--allow-host" in res.text
    res = ctl.http.put("/v1/primary/forward", json={"action": "start"}, headers={"Host": "evil.example"})
    assert res.status_code == 403
    assert primary.commands == []
    for host in (f"127.0.0.1:{ctl.api_port}", "localhost", f"[::1]:{ctl.api_port}", "10.0.0.1"):
        assert ctl.http.get("/v1/processes", headers={"Host": host}).status_code == 200, host


def test_allow_host_option_names_extra_hosts():
    server = CtlServer("--allow-host", "spp.lab.example")
    try:
        assert server.http.get("/v1/processes", headers={"Host": "spp.lab.example:7777"}).status_code == 200
        assert server.http.get("/v1/processes", headers={"Host": "other.example"}).status_code == 403
    finally:
        server.close()


LAUNCH = {"client_id": 2, "proc_name": "spp_nfv", "eal": {"-l": "1,2", "-m": 512}, "app": {"-n": 2}}


def test_cross_origin_state_change_is_refused(ctl):
    primary = ctl.connect("primary")
    assert ctl.wait_until(lambda: listed(ctl) == [{"type": "primary"}])
    primary.clear()
    own = f"http://127.0.0.1:{ctl.api_port}"
    for origin in ("http://evil.example", "null", "http://127.0.0.1:8080", f"{own}.evil.example"):
        res = ctl.http.put("/v1/primary/launch", json=LAUNCH, headers={"Origin": origin})
        assert res.status_code == 403, origin
        assert "cross-origin" in res.text
        assert ctl.http.delete("/v1/primary", headers={"Origin": origin}).status_code == 403
    res = ctl.http.put(
        "/v1/primary/forward", json={"action": "start"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert res.status_code == 403
    assert primary.commands == []  # nothing reached the primary
    # Same origin, and reads from anywhere, still work.
    res = ctl.http.put("/v1/primary/forward", json={"action": "start"}, headers={"Origin": own})
    assert res.status_code == 204
    assert ctl.http.get("/v1/primary/status", headers={"Origin": "http://evil.example"}).status_code == 200
    assert primary.commands == ["forward", "status"]


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/nfvs/{id}"),
        ("DELETE", "/v1/vfs/{id}"),
        ("PUT", "/v1/pcaps/{id}/capture"),
        ("DELETE", "/v1/primary/flow_rules/port_id/{id}"),
        ("DELETE", "/v1/primary/flow_rules/{id}/port_id/0"),
        ("POST", "/v1/primary/flow_rules/port_id/{id}/validate"),
    ],
)
def test_huge_ids_are_bad_requests(ctl, method, path):
    primary = ctl.connect("primary")
    assert ctl.wait_until(lambda: listed(ctl) == [{"type": "primary"}])
    body = {"rule": {"direction": "ingress", "pattern": ["eth"], "actions": ["drop"]}}
    for digits in (11, 4301, 8000):
        res = ctl.http.request(method, path.format(id="9" * digits), json=body)
        assert res.status_code == 400, (digits, res.text)
        assert "invalid" in res.text and "2147483647" in res.text
        assert len(res.text) < 400
    # Longer than a request line may be: aiohttp itself answers 400.
    res = ctl.http.request(method, path.format(id="9" * 20000), json=body)
    assert res.status_code == 400
    assert primary.commands == []


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_deeply_nested_json_is_a_bad_request(ctl, depth):
    nfv = ctl.connect("nfv", 1)
    assert ctl.wait_until(lambda: listed(ctl) == [{"type": "nfv", "client-id": 1}])
    nfv.clear()
    nested = "[" * depth + "]" * depth
    for body in (nested, '{"action": ' + nested + "}", '{"port": ' + nested + ', "action": "add"}'):
        res = ctl.http.put("/v1/nfvs/1/ports", content=body.encode())
        assert res.status_code == 400, (depth, res.text[:200])
        assert len(res.text) < 1000
    assert nfv.commands == []
    assert ctl.http.get("/v1/nfvs/1").status_code == 200


# -- a stopped process ------------------------------------------------------------------------------

SECONDARY = textwrap.dedent("""
    import json, socket, sys
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    while True:
        cmd = s.recv(65536).decode()
        if not cmd:
            break
        if cmd == "status":
            reply = {"client-id": 9, "status": "idling", "master-lcore": 1, "lcores": [1, 2],
                     "ports": [], "patches": []}
        else:
            reply = {"results": [{"result": "success"}], "client_id": 9, "process_type": "nfv"}
        s.sendall(json.dumps(reply).encode().ljust(32768, b"\\0"))
""")


def test_stopped_secondary_does_not_stall_the_api():
    server = CtlServer(timeout=10.0)  # SPP-like patience: a stall would show as ~10 s
    child = subprocess.Popen([sys.executable, "-c", SECONDARY, str(server.sec_port)])
    try:
        nfv = server.connect("nfv", 4)
        assert server.wait_until(lambda: len(server.processes()) == 2)
        os.kill(child.pid, signal.SIGSTOP)

        def marked() -> bool:
            return {"type": "nfv", "client-id": 9, "status": "not responding"} in server.processes()

        # Marked as soon as spp-ctl has found the process behind the connection (a moment).
        assert server.wait_until(marked, timeout=10)
        t0 = time.monotonic()
        listing = server.processes()
        assert {"type": "nfv", "client-id": 9, "status": "not responding"} in listing
        assert {"type": "nfv", "client-id": 4} in listing
        res = server.http.get("/v1/nfvs/9")
        assert res.status_code == 503 and "not responding" in res.text
        assert server.http.get("/v1/cpu_usage").status_code == 200
        assert server.http.get("/v1/nfvs/4").status_code == 200
        assert time.monotonic() - t0 < 5, "nothing above may wait for the stopped process"
        # Resumed, it answers again: still registered, nothing was lost.
        os.kill(child.pid, signal.SIGCONT)
        assert server.wait_until(lambda: server.http.get("/v1/nfvs/9").status_code == 200)
        assert sorted(server.processes(), key=str) == [
            {"type": "nfv", "client-id": 4},
            {"type": "nfv", "client-id": 9},
        ]
        assert not nfv.eof.is_set()
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.kill()
        child.wait(5)
        server.close()


# -- peer credentials, unit level ---------------------------------------------------------------


@pytest.mark.parametrize(
    "family,listen,connect",
    [
        (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
        (socket.AF_INET6, "::1", "::1"),
        (socket.AF_INET6, "127.0.0.1", "::ffff:127.0.0.1"),  # a dual-stack client of an IPv4 server
    ],
)
def test_peer_of_a_local_connection_is_found_with_uid_and_pid(family, listen, connect):
    from spp.control.ctl import peercred

    server = socket.socket(socket.AF_INET6 if ":" in listen else socket.AF_INET)
    try:
        server.bind((listen, 0))
    except OSError:
        server.close()
        pytest.skip(f"no {listen} on this host")
    server.listen(1)
    client = socket.socket(family)
    try:
        client.connect((connect, server.getsockname()[1]))
        accepted, _ = server.accept()
        with accepted:
            cred = peercred.lookup(accepted)
            assert cred is not None
            assert cred.uid == os.geteuid()
            assert peercred.find_pid(cred.inode) == os.getpid()
            assert peercred.may_register(cred, os.geteuid(), allow_remote=False) is None
            assert "uid" in (peercred.may_register(peercred.PeerCred(4242, 1), 1000, False) or "")
            assert peercred.may_register(None, 1000, allow_remote=True) is None
    finally:
        client.close()
        server.close()
