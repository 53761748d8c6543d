"""REST API of the real spp-ctl subprocess, driven against fake SPP processes on its wire ports.

Each test asserts the exact command string spp-ctl put on the wire, the status code and the body.
One spp-ctl serves the whole module; fixtures connect fresh fake processes (unique IDs) per test
and wait until spp-ctl has seen them come and go.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest

from tests.ctl_doubles import CtlServer, FakeProcess

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def ctl() -> Iterator[CtlServer]:
    server = CtlServer(timeout=1.0, launch_timeout=3.0)
    yield server
    server.close()


def _listed(ctl: CtlServer, kind: str, client_id: int | None) -> bool:
    entry = {"type": kind} if kind == "primary" else {"type": kind, "client-id": client_id}
    return entry in ctl.processes()


def _attach(ctl: CtlServer, kind: str, **kw) -> Iterator[FakeProcess]:
    client_id = None if kind == "primary" else next(_ids)
    peer = ctl.connect(kind, client_id, **kw)
    assert ctl.wait_until(lambda: _listed(ctl, kind, client_id)), ctl.log_text()[-3000:]
    peer.clear()
    yield peer
    peer.close()
    assert ctl.wait_until(lambda: not _listed(ctl, kind, client_id))


@pytest.fixture
def primary(ctl):
    yield from _attach(ctl, "primary", split=3)


@pytest.fixture
def nfv(ctl):
    yield from _attach(ctl, "nfv", split=2)


@pytest.fixture
def vf(ctl):
    yield from _attach(ctl, "vf")


@pytest.fixture
def mirror(ctl):
    yield from _attach(ctl, "mirror")


@pytest.fixture
def pcap(ctl):
    yield from _attach(ctl, "pcap")


def call(ctl: CtlServer, method: str, path: str, body=None, raw: bytes | None = None, json_ct: bool = False):
    """A request; by default the body goes out *without* Content-Type, as ``requests.put(data=...)``."""
    content = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if json_ct else {}
    return ctl.http.request(method, path, content=content, headers=headers)


def ok(res, status=204):
    assert res.status_code == status, res.text
    if status == 204:
        assert res.content == b""
    return res


def err(res, status: int, message: str) -> None:
    assert (res.status_code, res.text) == (status, message)
    assert res.headers["content-type"] == "text/plain"


# -- /v1 ------------------------------------------------------------------------------------------


def test_processes_lists_in_registration_order_with_spp_shape(ctl, primary, nfv, vf, mirror, pcap):
    for peer in (primary, nfv, vf, mirror, pcap):
        peer.clear()  # attaching the later fixtures probed the earlier peers
    res = ok(ctl.http.get("/v1/processes"), 200)
    assert res.headers["content-type"] == "application/json"
    assert res.text == json.dumps(
        [
            {"type": "primary"},
            {"type": "nfv", "client-id": nfv.client_id},
            {"type": "vf", "client-id": vf.client_id},
            {"type": "mirror", "client-id": mirror.client_id},
            {"type": "pcap", "client-id": pcap.client_id},
        ]
    )
    # SPP's side effect: every secondary is probed with status; the primary is not.
    for peer in (nfv, vf, mirror, pcap):
        assert peer.commands == ["status"]
    assert primary.commands == []


def test_cpu_layout_shape(ctl):
    res = ok(ctl.http.get("/v1/cpu_layout"), 200)
    layout = res.json()
    assert isinstance(layout, list) and layout
    lcores = []
    for sock in layout:
        assert set(sock) == {"socket_id", "cores"} and isinstance(sock["socket_id"], int)
        for core in sock["cores"]:
            assert set(core) == {"core_id", "lcores"}
            lcores += core["lcores"]
    assert 0 in lcores and sorted(lcores) == sorted(set(lcores))


def test_cpu_usage_probes_all(ctl, primary, nfv, vf, pcap):
    primary.clear()
    res = ok(ctl.http.get("/v1/cpu_usage"), 200)
    assert res.json() == [
        {"proc-type": "primary", "master-lcore": 0, "lcores": [0, 1]},
        {"proc-type": "nfv", "client-id": nfv.client_id, "master-lcore": 1, "lcores": [1, 2]},
        {"proc-type": "vf", "client-id": vf.client_id, "master-lcore": 1, "lcores": [1, 2, 3]},
        {"proc-type": "pcap", "client-id": pcap.client_id, "master-lcore": 1, "lcores": [1, 2, 3]},
    ]
    assert primary.commands == ["status"]


# -- conventions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/v1/nothing", 404, "Not found: '/nothing'"),
        ("GET", "/v1/nfvs/abc", 404, "Not found: '/abc'"),
        ("GET", "/v1/nfvs/-1", 404, "Not found: '/-1'"),
        ("GET", "/v2/processes", 404, "Not found: '/v2/processes'"),
        ("GET", "/v1/processes/", 404, "Not found: '/processes/'"),
        ("GET", "/v1/primary/flow_rules/port_id/x", 404, "Not found: '/port_id/x'"),
        ("POST", "/v1/processes", 405, "Method not allowed."),
        ("GET", "/v1/primary/ports", 405, "Method not allowed."),
        ("PUT", "/v1/nfvs/1", 405, "Method not allowed."),
        ("GET", "/v1/primary", 405, "Method not allowed."),
        ("GET", "/v1/nfvs/99", 404, "sec_id 99 not found."),
        ("GET", "/v1/nfvs/007", 404, "sec_id 7 not found."),
        ("GET", "/v1/primary/status", 404, "primary not found."),
    ],
)
def test_routing_errors(ctl, method, path, status, message):
    err(ctl.http.request(method, path), status, message)


def test_body_parsing_with_and_without_content_type(ctl, nfv):
    path = f"/v1/nfvs/{nfv.client_id}/forward"
    ok(call(ctl, "PUT", path, {"action": "start"}))
    ok(call(ctl, "PUT", path, {"action": "stop"}, json_ct=True))
    assert nfv.commands == ["forward", "stop"]
    err(call(ctl, "PUT", path, raw=b"action=start"), 400, "Not in json format.")
    err(call(ctl, "PUT", path, raw=b"action=start", json_ct=True), 400, "Not in json format.")
    err(call(ctl, "PUT", path, raw=b""), 400, "Not in json format.")
    res = call(ctl, "PUT", path, raw=b'["start"]')
    assert res.status_code == 400 and res.text.startswith("Not in json format")
    assert nfv.commands == ["forward", "stop"]


def test_secondary_lookup_comes_before_body_parsing(ctl, nfv):
    err(call(ctl, "PUT", "/v1/nfvs/120/ports", raw=b"{"), 404, "sec_id 120 not found.")
    # an ID of another type is "not found" too
    err(call(ctl, "GET", f"/v1/vfs/{nfv.client_id}"), 404, f"sec_id {nfv.client_id} not found.")


# -- primary --------------------------------------------------------------------------------------


def test_primary_status_passthrough_from_split_padded_reply(ctl, primary):
    res = ok(ctl.http.get("/v1/primary/status"), 200)
    assert res.text == json.dumps(primary.status)
    assert res.headers["content-type"] == "application/json"
    assert primary.commands == ["status"]


def test_primary_clear_forward_stop_patch(ctl, primary):
    ok(ctl.http.delete("/v1/primary/status"))
    ok(call(ctl, "PUT", "/v1/primary/forward", {"action": "start"}))
    ok(call(ctl, "PUT", "/v1/primary/forward", {"action": "stop"}))
    ok(call(ctl, "PUT", "/v1/primary/patches", {"src": "ring:0", "dst": "ring:1"}))
    ok(ctl.http.delete("/v1/primary/patches"))  # C echo 'patch\0reset' + padding: success
    assert primary.commands == ["clear", "forward", "stop", "patch ring:0 ring:1", "patch reset"]


def test_primary_forward_validates_action(ctl, primary):
    err(call(ctl, "PUT", "/v1/primary/forward", {"action": "go"}), 400, "invalid key(action): go.")
    err(call(ctl, "PUT", "/v1/primary/forward", {}), 400, "key(action) required.")
    assert primary.commands == []


def test_primary_ports(ctl, primary):
    ok(call(ctl, "PUT", "/v1/primary/ports", {"action": "add", "port": "ring:0"}))
    ok(call(ctl, "PUT", "/v1/primary/ports", {"action": "del", "port": "vhost:1"}))
    ok(
        call(
            ctl,
            "PUT",
            "/v1/primary/ports",
            {"action": "add", "port": "pipe:0", "rx": "ring:0", "tx": "ring:1"},
        )
    )
    ok(call(ctl, "PUT", "/v1/primary/ports", {"action": "del", "port": "pipe:0"}))
    assert primary.commands == ["add ring:0", "del vhost:1", "add pipe:0 ring:0 ring:1", "del pipe:0"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"port": "ring:0"}, "key(action) required."),
        ({"action": "add"}, "key(port) required."),
        ({"action": "plug", "port": "ring:0"}, "invalid key(action): plug."),
        ({"action": "add", "port": "ring:a"}, "invalid key(port): ring:a."),
        ({"action": "add", "port": "ring: 1"}, "invalid key(port): ring: 1."),
        ({"action": "add", "port": "eth:0"}, "invalid key(port): eth:0."),
        ({"action": "add", "port": "pipe:0", "tx": "ring:1"}, "key(rx) required."),
        ({"action": "add", "port": "pipe:0", "rx": "vhost:0", "tx": "ring:1"}, "invalid key(rx): vhost:0."),
        ({"action": "add", "port": "pipe:0", "rx": "ring:0", "tx": "ring:x"}, "invalid key(tx): ring:x."),
    ],
)
def test_primary_ports_invalid(ctl, primary, body, message):
    err(call(ctl, "PUT", "/v1/primary/ports", body), 400, message)
    assert primary.commands == []


def test_primary_patch_invalid(ctl, primary):
    err(call(ctl, "PUT", "/v1/primary/patches", {"src": "ring:0"}), 400, "key(dst) required.")
    err(call(ctl, "PUT", "/v1/primary/patches", {"src": "ring:0", "dst": 1}), 400, "invalid key(dst): 1.")
    assert primary.commands == []


def test_without_primary_order_of_checks(ctl):
    err(call(ctl, "PUT", "/v1/primary/ports", {"action": "add"}), 400, "key(port) required.")
    err(call(ctl, "PUT", "/v1/primary/ports", {"action": "add", "port": "ring:0"}), 404, "primary not found.")
    err(call(ctl, "PUT", "/v1/primary/patches", {}), 404, "primary not found.")
    err(call(ctl, "PUT", "/v1/primary/forward", raw=b"nope"), 400, "Not in json format.")
    err(call(ctl, "PUT", "/v1/primary/launch", {"client_id": 1}), 400, "key(proc_name) required.")
    err(ctl.http.delete("/v1/primary"), 404, "primary not found.")


def test_primary_failed_replies_become_400(ctl, primary):
    primary.replies["add ring:0"] = {
        "result": "failed",
        "command": "add",
        "port": "ring:0",
        "message": "port ring:0 is already added",
    }
    primary.replies["add ring:1"] = {"result": "failed", "command": "add", "port": "ring:1"}
    primary.replies["add ring:2"] = "add ring:2"  # C echo of a command it could not run
    err(
        call(ctl, "PUT", "/v1/primary/ports", {"action": "add", "port": "ring:0"}),
        400,
        "port ring:0 is already added",
    )
    err(
        call(ctl, "PUT", "/v1/primary/ports", {"action": "add", "port": "ring:1"}),
        400,
        "command failed: add ring:1",
    )
    err(
        call(ctl, "PUT", "/v1/primary/ports", {"action": "add", "port": "ring:2"}),
        400,
        "command failed: add ring:2",
    )
    primary.replies["patch reset"] = {"result": "succeeded", "command": "patch"}  # our processes' style
    ok(ctl.http.delete("/v1/primary/patches"))


def test_primary_launch(ctl, primary):
    body = {
        "proc_name": "spp_nfv",
        "client_id": "100",
        "eal": {"-m": "512", "-l": "1,2", "--proc-type": "secondary"},
        "app": {"-s": "127.0.0.1:6666", "-n": "100"},
    }
    ok(call(ctl, "PUT", "/v1/primary/launch", body))
    assert primary.commands == [
        "launch 100 spp_nfv -l 1,2 --proc-type secondary -m 512 -- -n 100 -s 127.0.0.1:6666"
    ]


def test_primary_launch_waits_for_a_slow_primary(ctl, primary):
    import threading

    def slow(command: str):
        if command.startswith("launch"):
            threading.Event().wait(1.5)  # longer than the 1 s command timeout, within the 3 s launch timeout
            return {"result": "succeeded", "command": "launch"}
        return ...

    primary.handler = slow
    body = {
        "proc_name": "spp_vf",
        "client_id": 101,
        "eal": {"-l": "1", "--proc-type": "secondary"},
        "app": {"--client-id": 101, "-s": "127.0.0.1:6666"},
    }
    ok(call(ctl, "PUT", "/v1/primary/launch", body))
    assert primary.commands == [
        "launch 101 spp_vf -l 1 --proc-type secondary -- --client-id 101 -s 127.0.0.1:6666"
    ]
    primary.handler = None
    primary.replies["launch 102 spp_mirror -l 1 --proc-type secondary -- "] = {
        "result": "failed",
        "command": "launch",
        "message": "spp_mirror is not supported",
    }
    body = {
        "proc_name": "spp_mirror",
        "client_id": 102,
        "eal": {"-l": "1", "--proc-type": "secondary"},
        "app": {},
    }
    err(call(ctl, "PUT", "/v1/primary/launch", body), 400, "spp_mirror is not supported")


def test_primary_launch_invalid(ctl, primary, nfv):
    base = {"proc_name": "spp_nfv", "client_id": 5, "eal": {"-l": "1", "--proc-type": "secondary"}, "app": {}}
    cases = [
        ({"client_id": 0}, 400, "invalid key(client_id): 0."),
        ({"client_id": "abc"}, 400, "invalid key(client_id): abc."),
        ({"proc_name": "spp_primary"}, 400, "invalid key(proc_name): spp_primary."),
        ({"eal": {"-l": "1"}}, 400, "key(eal --proc-type) required."),
        ({"client_id": nfv.client_id}, 409, f"Secondary ID {nfv.client_id} is already used."),
    ]
    for change, status, message in cases:
        err(call(ctl, "PUT", "/v1/primary/launch", {**base, **change}), status, message)
    for key in ["client_id", "proc_name", "eal", "app"]:
        body = dict(base)
        del body[key]
        err(call(ctl, "PUT", "/v1/primary/launch", body), 400, f"key({key}) required.")
    assert primary.commands == []


def test_primary_exit(ctl, primary):
    ok(ctl.http.delete("/v1/primary"))
    assert primary.commands == ["exit"]
    assert {"type": "primary"} not in ctl.processes()


def test_flow_rules_commands_and_verbatim_replies(ctl, primary):
    rule = {
        "group": 0,
        "priority": 0,
        "direction": "ingress",
        "transfer": True,
        "pattern": ["eth dst is 11:22:33:44:55:66 type mask 0xffff", "vlan vid is 100"],
        "actions": ["queue index 1", "of_pop_vlan"],
    }
    res = ok(call(ctl, "POST", "/v1/primary/flow_rules/port_id/0/validate", {"rule": rule}), 200)
    assert res.json() == {"result": "success", "message": "Flow rule validated"}
    created = {"result": "success", "message": "Flow rule #0 created", "rule_id": "0"}
    primary.handler = lambda c: created if c.startswith("flow create") else ...
    res = ok(
        call(ctl, "POST", "/v1/primary/flow_rules/port_id/1", {"rule": {**rule, "transfer": False}}), 200
    )
    assert res.text == json.dumps(created)
    failed = {"result": "error", "message": "Flow rule #3 not found"}
    primary.handler = lambda c: failed if c == "flow destroy phy:0 3" else ...
    res = ok(ctl.http.delete("/v1/primary/flow_rules/3/port_id/0"), 200)
    assert res.json() == failed
    ok(ctl.http.delete("/v1/primary/flow_rules/port_id/2"), 200)
    minimal = {"direction": "egress", "pattern": ["eth"], "actions": ["drop"]}
    ok(call(ctl, "POST", "/v1/primary/flow_rules/port_id/0", {"rule": minimal}), 200)
    tail = "pattern eth dst is 11:22:33:44:55:66 type mask 0xffff / vlan vid is 100 / end "
    tail += "actions queue index 1 / of_pop_vlan / end"
    assert primary.commands == [
        "flow validate phy:0 group 0 priority 0 transfer ingress " + tail,
        "flow create phy:1 group 0 priority 0 ingress " + tail,
        "flow destroy phy:0 3",
        "flow destroy phy:2 ALL",
        "flow create phy:0 egress pattern eth / end actions drop / end",
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "key(rule) required."),
        ({"rule": []}, "invalid key(rule): []."),
        ({"rule": {"pattern": [], "actions": []}}, "key(direction) required."),
        ({"rule": {"direction": "both", "pattern": [], "actions": []}}, "invalid key(direction): both."),
        (
            {"rule": {"group": True, "direction": "ingress", "pattern": [], "actions": []}},
            "invalid key(group): True.",
        ),
        (
            {"rule": {"priority": "1", "direction": "ingress", "pattern": [], "actions": []}},
            "invalid key(priority): 1.",
        ),
        (
            {"rule": {"transfer": 1, "direction": "ingress", "pattern": [], "actions": []}},
            "invalid key(transfer): 1.",
        ),
        ({"rule": {"direction": "ingress", "actions": []}}, "key(pattern) required."),
        ({"rule": {"direction": "ingress", "pattern": [1], "actions": []}}, "invalid key(pattern): [1]."),
        ({"rule": {"direction": "ingress", "pattern": [], "actions": "drop"}}, "invalid key(actions): drop."),
    ],
)
def test_flow_rules_invalid(ctl, primary, body, message):
    err(call(ctl, "POST", "/v1/primary/flow_rules/port_id/0", body), 400, message)
    assert primary.commands == []


# -- nfv ------------------------------------------------------------------------------------------


def test_nfv_endpoints(ctl, nfv):
    base = f"/v1/nfvs/{nfv.client_id}"
    res = ok(ctl.http.get(base), 200)
    assert res.text == json.dumps(nfv.status)
    ok(call(ctl, "PUT", base + "/forward", {"action": "start"}))
    ok(call(ctl, "PUT", base + "/forward", {"action": "stop"}))
    ok(call(ctl, "PUT", base + "/ports", {"action": "add", "port": "ring:0"}))
    ok(call(ctl, "PUT", base + "/ports", {"action": "del", "port": "ring:0"}))
    ok(call(ctl, "PUT", base + "/patches", {"src": "phy:0nq1", "dst": "ring:0"}))
    ok(ctl.http.delete(base + "/patches"))
    assert nfv.commands == [
        "status",
        "forward",
        "stop",
        "add ring:0",
        "del ring:0",
        "patch phy:0nq1 ring:0",
        "patch reset",
    ]


def test_nfv_invalid_values(ctl, nfv):
    base = f"/v1/nfvs/{nfv.client_id}"
    err(call(ctl, "PUT", base + "/forward", {"action": "restart"}), 400, "invalid key(action): restart.")
    err(call(ctl, "PUT", base + "/forward", {"act": "start"}), 400, "key(action) required.")
    err(
        call(ctl, "PUT", base + "/ports", {"action": "add", "port": "vhost:x"}),
        400,
        "invalid key(port): vhost:x.",
    )
    err(
        call(ctl, "PUT", base + "/ports", {"action": "attach", "port": "ring:0"}),
        400,
        "invalid key(action): attach.",
    )
    err(
        call(ctl, "PUT", base + "/patches", {"src": "ring:0", "dst": "ring:0 "}),
        400,
        "invalid key(dst): ring:0 .",
    )
    assert nfv.commands == []
    nfv.replies["patch ring:0 ring:9"] = {
        "result": "failed",
        "command": "patch",
        "ports": {"src": "ring:0", "dst": "ring:9"},
    }
    err(
        call(ctl, "PUT", base + "/patches", {"src": "ring:0", "dst": "ring:9"}),
        400,
        "command failed: patch ring:0 ring:9",
    )


def test_nfv_exit_removes_it(ctl, nfv):
    ok(ctl.http.delete(f"/v1/nfvs/{nfv.client_id}"))
    assert nfv.commands == ["exit"]
    assert {"type": "nfv", "client-id": nfv.client_id} not in ctl.processes()
    err(ctl.http.get(f"/v1/nfvs/{nfv.client_id}"), 404, f"sec_id {nfv.client_id} not found.")


# -- vf -------------------------------------------------------------------------------------------


def test_vf_status_conversion(ctl, vf):
    res = ok(ctl.http.get(f"/v1/vfs/{vf.client_id}"), 200)
    info = vf.status
    assert res.text == json.dumps(
        {
            "client-id": vf.client_id,
            "ports": ["phy:0", "phy:0 nq 1", "ring:0"],
            "master-lcore": 1,
            "components": info["core"],
            "classifier_table": info["classifier_table"],
        }
    )
    assert vf.commands == ["status"]


def test_vf_components_and_ports(ctl, vf):
    base = f"/v1/vfs/{vf.client_id}"
    ok(call(ctl, "POST", base + "/components", {"name": "fwd1", "core": 12, "type": "forward"}))
    ok(ctl.http.delete(base + "/components/fwd1"))
    port = base + "/components/fwd1/ports"
    ok(call(ctl, "PUT", port, {"action": "attach", "port": "vhost:1", "dir": "rx"}))
    ok(call(ctl, "PUT", port, {"action": "attach", "port": "vhost:1", "dir": "rx", "vlan": {}}))
    ok(
        call(
            ctl,
            "PUT",
            port,
            {"action": "attach", "port": "vhost:1", "dir": "rx", "vlan": {"operation": "none"}},
        )
    )
    vlan_add = {"operation": "add", "id": 677, "pcp": 0}
    ok(call(ctl, "PUT", port, {"action": "attach", "port": "vhost:1", "dir": "rx", "vlan": vlan_add}))
    ok(
        call(
            ctl,
            "PUT",
            port,
            {"action": "attach", "port": "phy:0nq1", "dir": "tx", "vlan": {"operation": "del"}},
        )
    )
    ok(call(ctl, "PUT", port, {"action": "detach", "port": "vhost:0", "dir": "tx"}))
    assert vf.commands == [
        "component start fwd1 12 forward",
        "component stop fwd1",
        "port add vhost:1 rx fwd1",
        "port add vhost:1 rx fwd1",
        "port add vhost:1 rx fwd1",
        "port add vhost:1 rx fwd1 add_vlantag 677 0",
        "port add phy:0nq1 tx fwd1 del_vlantag",
        "port del vhost:0 tx fwd1",
    ]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/components", {"name": "c", "core": 2}, "key(type) required."),
        ("/components", {"name": "c", "core": 2, "type": "mirror"}, "invalid key(type): mirror."),
        ("/components", {"name": "c", "core": "2", "type": "merge"}, "invalid key(core): 2."),
        ("/components", {"name": "a b", "core": 2, "type": "merge"}, "invalid key(name): a b."),
        ("/components", {"name": 5, "core": 2, "type": "merge"}, "invalid key(name): 5."),
        (
            "/components/c/ports",
            {"action": "plug", "port": "ring:0", "dir": "rx"},
            "invalid key(action): plug.",
        ),
        ("/components/c/ports", {"action": "attach", "port": "ring:0", "dir": "up"}, "invalid key(dir): up."),
        (
            "/components/c/ports",
            {"action": "attach", "port": "ring0", "dir": "rx"},
            "invalid key(port): ring0.",
        ),
        ("/components/c/ports", {"action": "attach", "port": "ring:0"}, "key(dir) required."),
        (
            "/components/c/ports",
            {"action": "attach", "port": "ring:0", "dir": "rx", "vlan": {"operation": "push"}},
            "invalid key(vlan.operation): push.",
        ),
        (
            "/components/c/ports",
            {
                "action": "attach",
                "port": "ring:0",
                "dir": "rx",
                "vlan": {"operation": "add", "id": 1, "pcp": 8},
            },
            "invalid key(vlan.pcp): 8.",
        ),
        (
            "/components/c/ports",
            {"action": "attach", "port": "ring:0", "dir": "rx", "vlan": {"operation": "add", "pcp": 1}},
            "key(vlan.id) required.",
        ),
        (
            "/classifier_table",
            {"action": "add", "type": "mac", "port": "ring:0"},
            "key(mac_address) required.",
        ),
        (
            "/classifier_table",
            {"action": "set", "type": "mac", "port": "ring:0", "mac_address": "default"},
            "invalid key(action): set.",
        ),
        (
            "/classifier_table",
            {"action": "add", "type": "ip", "port": "ring:0", "mac_address": "default"},
            "invalid key(type): ip.",
        ),
        (
            "/classifier_table",
            {"action": "add", "type": "mac", "port": "ring:0", "mac_address": "fa:16:3e"},
            "invalid key(mac_address): fa:16:3e.",
        ),
        (
            "/classifier_table",
            {"action": "add", "type": "vlan", "port": "ring:0", "mac_address": "default"},
            "key(vlan) required.",
        ),
        (
            "/classifier_table",
            {"action": "add", "type": "vlan", "port": "ring:0", "mac_address": "default", "vlan": "x"},
            "invalid key(vlan): x.",
        ),
    ],
)
def test_vf_invalid_values(ctl, vf, path, body, message):
    method = "POST" if path == "/components" else "PUT"
    err(call(ctl, method, f"/v1/vfs/{vf.client_id}{path}", body), 400, message)
    assert vf.commands == []


def test_vf_classifier_table(ctl, vf):
    path = f"/v1/vfs/{vf.client_id}/classifier_table"
    mac = "FA:16:3E:7D:CC:35"
    ok(call(ctl, "PUT", path, {"action": "add", "type": "mac", "mac_address": mac, "port": "ring:0"}))
    ok(call(ctl, "PUT", path, {"action": "add", "type": "mac", "mac_address": "default", "port": "ring:0"}))
    ok(
        call(
            ctl,
            "PUT",
            path,
            {"action": "del", "type": "vlan", "vlan": 475, "mac_address": mac, "port": "ring:0"},
        )
    )
    ok(
        call(
            ctl,
            "PUT",
            path,
            {"action": "add", "type": "vlan", "vlan": "101", "mac_address": mac, "port": "ring:1"},
        )
    )
    assert vf.commands == [
        f"classifier_table add mac {mac} ring:0",
        "classifier_table add mac default ring:0",
        f"classifier_table del vlan 475 {mac} ring:0",
        f"classifier_table add vlan 101 {mac} ring:1",
    ]


def test_vf_error_reply_is_command_error(ctl, vf):
    vf.replies["component start c1 9 merge"] = {
        "results": [{"result": "error", "error_details": {"message": "Invalid value (core)"}}]
    }
    err(
        call(ctl, "POST", f"/v1/vfs/{vf.client_id}/components", {"name": "c1", "core": 9, "type": "merge"}),
        400,
        "command error: Invalid value (core)",
    )


def test_vf_exit(ctl, vf):
    ok(ctl.http.delete(f"/v1/vfs/{vf.client_id}"))
    assert vf.commands == ["exit"]
    assert {"type": "vf", "client-id": vf.client_id} not in ctl.processes()


# -- mirror / pcap --------------------------------------------------------------------------------


def test_mirror_endpoints(ctl, mirror):
    base = f"/v1/mirrors/{mirror.client_id}"
    res = ok(ctl.http.get(base), 200)
    assert res.json() == {
        "client-id": mirror.client_id,
        "ports": ["phy:0", "phy:0 nq 1", "ring:0"],
        "master-lcore": 1,
        "components": mirror.status["core"],
    }
    ok(call(ctl, "POST", base + "/components", {"name": "mr1", "core": 2, "type": "mirror"}))
    err(
        call(ctl, "POST", base + "/components", {"name": "mr1", "core": 2, "type": "forward"}),
        400,
        "invalid key(type): forward.",
    )
    ok(
        call(
            ctl,
            "PUT",
            base + "/components/mr1/ports",
            {
                "action": "attach",
                "port": "ring:1",
                "dir": "tx",
                "vlan": {"operation": "add", "id": 1, "pcp": 1},
            },
        )
    )
    ok(call(ctl, "PUT", base + "/components/mr1/ports", {"action": "detach", "port": "ring:1", "dir": "tx"}))
    ok(ctl.http.delete(base + "/components/mr1"))
    err(
        call(ctl, "PUT", base + "/classifier_table", {}),
        404,
        f"Not found: '/{mirror.client_id}/classifier_table'",
    )
    ok(ctl.http.delete(base))
    assert mirror.commands == [
        "status",
        "component start mr1 2 mirror",
        "port add ring:1 tx mr1",
        "port del ring:1 tx mr1",
        "component stop mr1",
        "exit",
    ]


def test_pcap_endpoints(ctl, pcap):
    base = f"/v1/pcaps/{pcap.client_id}"
    res = ok(ctl.http.get(base), 200)
    assert res.text == json.dumps(pcap.status)
    ok(call(ctl, "PUT", base + "/capture", {"action": "start"}))
    ok(call(ctl, "PUT", base + "/capture", {"action": "stop"}))
    err(call(ctl, "PUT", base + "/capture", {"action": "pause"}), 400, "invalid key(action): pause.")
    err(call(ctl, "PUT", base + "/capture", {}), 400, "key(action) required.")
    ok(ctl.http.delete(base))
    assert pcap.commands == ["status", "start", "stop", "exit"]


# -- failures of processes ------------------------------------------------------------------------


def test_silent_process_gets_503_and_is_dropped(ctl, nfv):
    nfv.silent = True
    res = call(ctl, "PUT", f"/v1/nfvs/{nfv.client_id}/ports", {"action": "add", "port": "ring:0"})
    assert res.status_code == 503 and f"nfv({nfv.client_id}) did not answer 'add ring:0'" in res.text
    assert {"type": "nfv", "client-id": nfv.client_id} not in ctl.processes()


def test_process_dying_mid_command_gets_503(ctl, primary):
    primary.handler = lambda c: primary.kill() if c == "status" else ...
    res = ctl.http.get("/v1/primary/status")
    assert res.status_code == 503 and "primary closed its connection" in res.text
    err(ctl.http.get("/v1/primary/status"), 404, "primary not found.")


def test_non_json_status_is_502(ctl, nfv):
    nfv.replies["status"] = "status"
    res = ctl.http.get(f"/v1/nfvs/{nfv.client_id}")
    assert res.status_code == 502 and "unexpected reply to 'status'" in res.text
