"""spp-ctl building blocks without sockets: reply framing, checks, launch strings, cpu layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spp.control.ctl import cpu, launch, validate
from spp.control.ctl.errors import ApiError
from spp.control.ctl.webapi import check_reply, not_found_message
from spp.control.ctl.wire import MSG_SIZE, ReplyFramer, parse_client_id_reply
from tests.ctl_doubles import worker_json

# -- framing ------------------------------------------------------------------------------------


def feed_all(pieces: list[bytes]) -> tuple[bool, object, int]:
    """Feed pieces until complete; return (done, reply, pieces used)."""
    framer = ReplyFramer()
    for n, piece in enumerate(pieces, 1):
        done, reply = framer.feed(piece)
        if done:
            return done, reply, n
    return False, None, len(pieces)


def test_padded_reply_split_in_pieces_completes_when_json_parses():
    raw = b'{"result":"succeeded","command":"add","port":"ring:0"}'
    raw += b"\0" * (MSG_SIZE - len(raw))
    pieces = [raw[:10], raw[10:30], raw[30:4000], raw[4000:]]
    done, reply, used = feed_all(pieces)
    assert done and used == 3
    assert reply == {"result": "succeeded", "command": "add", "port": "ring:0"}


def test_leading_nuls_from_previous_padding_are_skipped():
    framer = ReplyFramer()
    assert framer.feed(b"\0" * 5000) == (False, None)
    assert framer.empty
    assert framer.feed(b'{"a": 1}') == (True, {"a": 1})


def test_patch_reset_echo_is_returned_raw_after_32k():
    raw = b"patch\0reset" + b"\0" * (MSG_SIZE - 11)
    framer = ReplyFramer()
    assert framer.feed(raw[:1000]) == (False, None)
    assert framer.quiet_timeout() is not None  # not JSON: a quiet period may end it
    assert framer.feed(raw[1000:]) == (True, "patchreset")


def test_unpadded_worker_json_and_partial_json_waits():
    text = worker_json({"results": [{"result": "success"}], "info": {"vhost": []}})
    assert text == '{ "results": [ { "result": "success" } ], "info": { "vhost": [  ] } }'
    framer = ReplyFramer()
    assert framer.feed(text[:20].encode()) == (False, None)
    assert framer.quiet_timeout() is None  # partial JSON: wait for the rest
    done, reply = framer.feed(text[20:].encode())
    assert done and reply["info"] == {"vhost": []}


def test_large_unpadded_json_beyond_32k_is_not_cut():
    big = json.dumps({"flows": ["x" * 100] * 600}).encode()
    assert len(big) > MSG_SIZE
    done, reply, _ = feed_all([big[:MSG_SIZE], big[MSG_SIZE:]])
    assert done and len(reply["flows"]) == 600


def test_non_json_text_finishes_on_quiet_or_eof():
    framer = ReplyFramer()
    assert framer.feed(b"Invalid command") == (False, None)
    assert framer.finish() == "Invalid command"
    partial = ReplyFramer()
    partial.feed(b'{"result":')
    assert partial.finish() is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"results": [{"result": "success"}], "client_id": 1, "process_type": "nfv"}, ("nfv", 1)),
        ({"results": [{"result": "success"}], "client_id": 7, "process_type": "pcap"}, ("pcap", 7)),
        ({"client_id": 0, "process_type": "vf"}, None),
        ({"client_id": True, "process_type": "vf"}, None),
        ({"client_id": 3, "process_type": "primary"}, None),
        ("_get_client_id", None),
    ],
)
def test_client_id_reply(reply, expected):
    ident = parse_client_id_reply(reply)
    assert (None if ident is None else (ident.type, ident.id)) == expected


# -- reply interpretation -----------------------------------------------------------------------


def test_check_reply_rules():
    check_reply("add ring:0", {"result": "succeeded", "command": "add"})
    check_reply("patch reset", "patchreset")
    check_reply("status", {"client-id": 1})
    with pytest.raises(ApiError) as e:
        check_reply("add ring:0", {"result": "failed", "command": "add", "message": "ring:0 exists"})
    assert (e.value.status, e.value.message) == (400, "ring:0 exists")
    with pytest.raises(ApiError) as e:
        check_reply("add ring:0", {"result": "failed", "command": "add"})
    assert e.value.message == "command failed: add ring:0"
    with pytest.raises(ApiError) as e:
        check_reply("add ring:0", "add ring:0")
    assert e.value.message == "command failed: add ring:0"
    err = {"results": [{"result": "error", "error_details": {"message": "Invalid value (port)"}}]}
    with pytest.raises(ApiError) as e:
        check_reply("port add x rx y", err)
    assert e.value.message == "command error: Invalid value (port)"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/nothing", "Not found: '/nothing'"),
        ("/v1/nfvs/abc", "Not found: '/abc'"),
        ("/v2/processes", "Not found: '/v2/processes'"),
        ("/v1/processes/", "Not found: '/processes/'"),
        ("/v1/nfvs", "Not found: '/'"),
        ("/v1/primary/flow_rules/x", "Not found: '/x'"),
        ("/", "Not found: '/'"),
    ],
)
def test_not_found_message(path, message):
    assert not_found_message(path) == message


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uid", ["phy:0", "ring:12", "vhost:1", "pcap:0", "nullpmd:3", "tap:1", "memif:0", "pipe:2", "phy:0nq1"]
)
def test_valid_ports(uid):
    assert validate.is_port(uid)


@pytest.mark.parametrize(
    "uid",
    [
        "ring: 1",
        " ring:1",
        "ring:1 ",
        "ring:+1",
        "ring:-1",
        "ring:1_0",
        "ring:x",
        "eth:0",
        "ring",
        "ring:1:2",
        "vhost:0nq1",
        "phy:0nq",
        "phy:nq1",
        "",
        5,
        None,
    ],
)
def test_invalid_ports(uid):
    assert not validate.is_port(uid)


def test_mac_and_vlan_checks():
    assert validate.mac_address("fa:16:3e:7d:cc:35") == "fa:16:3e:7d:cc:35"
    assert validate.mac_address("default") == "default"
    for bad in ["fa-16-3e-7d-cc-35", "fa:16:3e:7d:cc", "zz:16:3e:7d:cc:35", 1]:
        with pytest.raises(ApiError):
            validate.mac_address(bad)
    assert validate.vlan_option({"vlan": {"operation": "add", "id": "677", "pcp": 0}}) == " add_vlantag 677 0"
    assert validate.vlan_option({"vlan": {}}) == ""
    with pytest.raises(ApiError) as e:
        validate.vlan_option({"vlan": {"operation": "add", "id": 4096, "pcp": 0}})
    assert e.value.message == "invalid key(vlan.id): 4096."


def test_parse_body():
    assert validate.parse_body(b'{"a": 1}') == {"a": 1}
    for raw in [b"", b"{", b"\xff", b"[1]", b'"x"']:
        with pytest.raises(ApiError) as e:
            validate.parse_body(raw)
        assert e.value.status == 400 and e.value.message.startswith("Not in json format")


# -- launch -------------------------------------------------------------------------------------


def test_launch_command_examples_from_spec():
    body = {
        "proc_name": "spp_nfv",
        "client_id": "1",
        "eal": {"-m": "512", "-l": "1,2", "--proc-type": "secondary"},
        "app": {"-s": "127.0.0.1:6666", "-n": "1"},
    }
    assert launch.build_launch(body) == (
        1,
        "launch 1 spp_nfv -l 1,2 --proc-type secondary -m 512 -- -n 1 -s 127.0.0.1:6666",
    )
    body = {
        "proc_name": "spp_vf",
        "client_id": 2,
        "eal": {"-m": 512, "--proc-type": "secondary", "--no-pci": None, "-l": "1,4-7"},
        "app": {"--vhost-client": "", "-s": "127.0.0.1:6666", "--client-id": 2},
    }
    assert launch.build_launch(body)[1] == (
        "launch 2 spp_vf -l 1,4-7 --no-pci --proc-type secondary -m 512 -- --client-id 2 -s 127.0.0.1:6666 "
        "--vhost-client"
    )


def test_launch_passes_other_known_options_after_spps():
    """DPDK EAL options beyond SPP's list and our processes' own app options are passed on."""
    body = {
        "proc_name": "spp_pcap",
        "client_id": 3,
        "eal": {"--main-lcore": "0", "-l": "0-2", "--proc-type": "secondary", "--no-telemetry": None},
        "app": {"--format": "pcapng", "--client-id": 3, "-c": "ring:0", "--burst": 64},
    }
    assert launch.build_launch(body)[1] == (
        "launch 3 spp_pcap -l 0-2 --proc-type secondary --main-lcore 0 --no-telemetry -- "
        "--client-id 3 -c ring:0 --format pcapng --burst 64"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"client_id": 0}, "invalid key(client_id): 0."),
        ({"client_id": 128}, "invalid key(client_id): 128."),
        ({"client_id": "x1"}, "invalid key(client_id): x1."),
        ({"client_id": True}, "invalid key(client_id): True."),
        ({"proc_name": "spp_foo"}, "invalid key(proc_name): spp_foo."),
        ({"eal": {"--proc-type": "secondary"}}, "key(eal -c, -l or --lcores) required."),
        ({"eal": {"-l": "1"}}, "key(eal --proc-type) required."),
        ({"eal": {"-l": "1, 2", "--proc-type": "secondary"}}, "invalid key(eal -l): 1, 2."),
        ({"eal": []}, "invalid key(eal): []."),
        ({"app": {"-n": "2"}}, "invalid key(app -n): 2. It must equal client_id 1."),
        (
            {"eal": {"-l": "1", "--proc-type": "secondary", "--bogus": "x"}},
            "invalid key(eal): unknown EAL option '--bogus'.",
        ),
        (
            {"app": {"--client-id": "1", "-x": 1}},
            "invalid key(app): unknown spp_nfv option '--client-id', '-x'.",
        ),
    ],
)
def test_launch_rejects(change, message):
    body = {"proc_name": "spp_nfv", "client_id": 1, "eal": {"-l": "1", "--proc-type": "secondary"}, "app": {}}
    body.update(change)
    with pytest.raises(ApiError) as e:
        launch.build_launch(body)
    assert (e.value.status, e.value.message) == (400, message)


# -- cpu ----------------------------------------------------------------------------------------


def fake_sysfs(base: Path, topo: dict[int, tuple[int, int]]) -> Path:
    for cpu_id, (socket_id, core_id) in topo.items():
        d = base / f"cpu{cpu_id}" / "topology"
        d.mkdir(parents=True)
        (d / "core_id").write_text(f"{core_id}\n")
        (d / "physical_package_id").write_text(f"{socket_id}\n")
    (base / "cpufreq").mkdir()
    (base / "cpu9").mkdir()  # offline: no topology
    return base


def test_cpu_layout_from_sysfs(tmp_path):
    base = fake_sysfs(tmp_path, {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (0, 0), 10: (0, 1), 11: (1, 0)})
    assert cpu.cpu_layout(base) == [
        {"socket_id": 0, "cores": [{"core_id": 0, "lcores": [0, 3]}, {"core_id": 1, "lcores": [1, 10]}]},
        {"socket_id": 1, "cores": [{"core_id": 0, "lcores": [2, 11]}]},
    ]
    assert cpu.cpu_layout(tmp_path / "missing") is None


def test_cpu_usage_entries():
    assert cpu.usage_entry("primary", 0, {"lcores": [0, 1]}) == {
        "proc-type": "primary",
        "master-lcore": 0,
        "lcores": [0, 1],
    }
    info = {"info": {"master-lcore": 1, "core": [{"core": 2}, {"core": 3, "type": "unuse"}]}}
    assert cpu.usage_entry("vf", 2, info) == {
        "proc-type": "vf",
        "client-id": 2,
        "master-lcore": 1,
        "lcores": [1, 2, 3],
    }
    assert cpu.usage_entry("nfv", 1, "garbage") is None
