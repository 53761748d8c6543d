"""CLI building blocks without a server: renderers, parsers, config, DOT and terminal topology."""

from __future__ import annotations

import pytest

from spp.control.cli.client import CtlError, CtlUnreachable, parse_server_addr
from spp.control.cli.commands import flow
from spp.control.cli.commands.nfv import format_status as nfv_status
from spp.control.cli.commands.primary import (
    format_status,
    free_lcores,
    launch_template,
    parse_launch,
    parse_opts,
)
from spp.control.cli.commands.workers import format_mirror_status, format_pcap_status, format_vf_status
from spp.control.cli.common import CliError, clean_cmd, join_nq, split_sec_cmd
from spp.control.cli.config import CliConfig, ConfigError
from spp.control.cli.topo import Topology, _nfv_view, _worker_view, draw_chain, draw_fan
from tests.cli_doubles import MIRROR_STATUS, PCAP_STATUS, VF_STATUS


def _w(text: str) -> list[str]:
    """Words of a command line, as the shell hands them to the parsers."""
    return text.split()


# -- primary status (spec §7.3, exact layout) ----------------------------------------------------


def test_primary_status_layout_matches_spec() -> None:
    st = {
        "master-lcore": 0,
        "lcores": [0, 1],
        "forwarder": {
            "status": "idling",
            "ports": ["phy:0", "phy:1"],
            "patches": [{"src": "phy:0", "dst": "ring:0"}],
        },
        "phy_ports": [
            {
                "id": 0,
                "eth": "56:48:4f:53:54:00",
                "rx": 0,
                "tx": 0,
                "tx_drop": 0,
                "nof_queues": {"rx": 1, "tx": 1},
            }
        ],
        "ring_ports": [{"id": 0, "rx": 0, "rx_drop": 0, "tx": 0, "tx_drop": 0}],
        "pipes": [{"id": 0, "rx": 0, "tx": 1}],
    }
    assert format_status(st) == [
        "- lcore_ids:",
        "  - master: 0",
        "  - slave: 1",
        "- forwarder:",
        "  - status: idling",
        "  - ports:",
        "    - phy:0 -> ring:0",
        "    - phy:1",
        "- pipes:",
        "  - pipe:0 ring:0 ring:1",
        "- stats",
        "  - physical ports:",
        "      ID          rx          tx     tx_drop  rxq  txq mac_addr",
        "       0           0           0           0    1    1 56:48:4f:53:54:00",
        "  - ring ports:",
        "      ID          rx          tx     rx_drop     tx_drop",
        "       0           0           0           0           0",
    ]


def test_primary_status_slaves_list_and_missing_parts() -> None:
    lines = format_status({"lcores": [0, 1, 2], "phy_ports": [{"id": 3, "rx": 1, "tx": 2, "tx_drop": 0}]})
    assert lines[:3] == ["- lcore_ids:", "  - master: 0", "  - slaves: [1, 2]"]
    assert "forwarder" not in "\n".join(lines)
    # a phy port without nof_queues/eth still renders (dashes), it does not crash
    assert lines[-1] == "       3           1           2           0    -    - "


# -- nfv status --------------------------------------------------------------------------------


def test_nfv_status_layout() -> None:
    st = {
        "client-id": 1,
        "status": "running",
        "master-lcore": 1,
        "lcores": [1, 2],
        "ports": ["phy:0", "phy:1"],
        "patches": [{"src": "phy:0", "dst": "ring:0"}],
    }
    assert nfv_status(st) == [
        "- status: running",
        "- lcore_ids:",
        "  - master: 1",
        "  - slave: 2",
        "- ports:",
        "  - phy:0 -> ring:0",
        "  - phy:1",
    ]


def test_nfv_status_with_optional_counters() -> None:
    st = {
        "status": "idling",
        "master-lcore": 1,
        "lcores": [1, 2, 3],
        "ports": ["ring:0"],
        "patches": [],
        "port_stats": [{"port": "ring:0", "rx": 10, "tx": 20, "rx_drop": 0, "tx_drop": 3}],
    }
    lines = nfv_status(st)
    assert lines[3] == "  - slaves: [2, 3]"
    assert lines[-3:] == [
        "- stats:",
        "    port            rx          tx     rx_drop     tx_drop",
        "    ring:0          10          20           0           3",
    ]
    # the mapping form is accepted too, and no counters means no stats section
    st["port_stats"] = {"ring:0": {"rx": 1, "tx": 2, "rx_drop": 0, "tx_drop": 0}}
    assert nfv_status(st)[-1].split() == ["ring:0", "1", "2", "0", "0"]
    del st["port_stats"]
    assert "- stats:" not in nfv_status(st)


# -- vf / mirror / pcap status (spec §7.4) -------------------------------------------------------


def test_vf_status_layout() -> None:
    assert format_vf_status(VF_STATUS) == [
        "Basic Information:",
        "  - client-id: 2",
        "  - ports: [phy:1, ring:1, ring:2]",
        "  - lcore_ids:",
        "    - master: 1",
        "    - slaves: [2, 3, 4]",
        "Classifier Table:",
        "  - FA:16:3E:7D:CC:35, ring:2",
        "Components:",
        "  - core:2 'fwd1' (type: forward)",
        "    - rx: phy:1 (vlan operation: add, id: 101, pcp: 3)",
        "    - tx: ring:1",
        "  - core:3 'cls1' (type: classifier)",
        "    - rx: ring:1 (vlan operation: del)",
        "    - tx: ring:2",
        "    - tx: ring:3",
        "  - core:4 '' (type: unuse)",
    ]
    empty = format_vf_status({"client-id": 2, "ports": [], "master-lcore": 1, "components": []})
    assert "  No entries." in empty


def test_mirror_and_pcap_status_layout() -> None:
    assert format_mirror_status(MIRROR_STATUS) == [
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
    assert format_pcap_status(PCAP_STATUS) == [
        "Basic Information:",
        "  - client-id: 4",
        "  - status: running",
        "  - lcore_ids:",
        "    - master: 1",
        "    - slaves: [2, 3]",
        "Components:",
        "  - core:2 receive",
        "    - rx: phy:0",
        "  - core:3 write",
        "    - filename: /tmp/spp_pcap.20181108110600.phy0.1.1.pcap.lz4",
    ]


# -- parsing -----------------------------------------------------------------------------------


def test_clean_and_split() -> None:
    assert clean_cmd("  nfv   1 ;   patch  phy:0   ring:0 ") == "nfv 1;patch phy:0 ring:0"
    assert split_sec_cmd("nfv", " 1 ;  status") == (1, "status")
    with pytest.raises(CliError, match=r"^Required an ID and ';' before the command\.$"):
        split_sec_cmd("nfv", "1 status")
    with pytest.raises(CliError, match=r"^Invalid command: nfv x;status$"):
        split_sec_cmd("nfv", "x; status")


def test_join_nq() -> None:
    assert join_nq(["phy:0", "nq", "1", "ring:0"]) == (["phy:0nq1", "ring:0"], ["phy:0 nq 1", "ring:0"])
    assert join_nq(["ring:0", "phy:1", "nq", "2"]) == (["ring:0", "phy:1nq2"], ["ring:0", "phy:1 nq 2"])
    with pytest.raises(CliError, match="Invalid queue number 'x'"):
        join_nq(["phy:0", "nq", "x"])
    with pytest.raises(CliError, match="'nq' must follow a port"):
        join_nq(["phy:0", "nq"])


def test_parse_opts() -> None:
    assert parse_opts(["-l", "1-2", "--no-pci", "-m", "512"]) == {"-l": "1-2", "--no-pci": None, "-m": "512"}
    assert parse_opts(["-c", "phy:0", "nq", "1", "--fsize", "10"]) == {"-c": "phy:0 nq 1", "--fsize": "10"}
    with pytest.raises(CliError, match="Unexpected argument 'oops'"):
        parse_opts(["oops"])


def test_parse_launch_spec_examples() -> None:
    body = parse_launch(_w("nfv 1 -l 1,2 -m 512 -- -n 1 -s 127.0.0.1:6666"), used_ids=[])
    assert body == {
        "client_id": "1",
        "proc_name": "spp_nfv",
        "eal": {"-l": "1,2", "-m": "512", "--proc-type": "secondary"},
        "app": {"-n": "1", "-s": "127.0.0.1:6666"},
    }
    # spp_ prefix, ID taken from --client-id, --proc-type kept, vhost flag without value
    body = parse_launch(
        _w(
            "spp_vf -l 1,4-7 --no-pci --proc-type secondary -m 512 -- --client-id 2 --vhost-client -s 1.2.3.4"
        ),
        used_ids=[1],
    )
    assert body["client_id"] == "2" and body["proc_name"] == "spp_vf"
    assert body["eal"] == {"-l": "1,4-7", "--no-pci": None, "--proc-type": "secondary", "-m": "512"}
    assert body["app"] == {"--client-id": "2", "--vhost-client": None, "-s": "1.2.3.4"}
    # the given ID wins over the app option
    assert parse_launch(_w("nfv 3 -l 1 -- -n 9"), [])["app"]["-n"] == "3"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("nfv", "Invalid syntax! Proc type, ID and options are required."),
        ("foo 1 -l 1 -- -n 1", "'foo' is not supported in launch cmd."),
        ("nfv 1 -l 1,2 -m 512", 'Arguments should include separator "--".'),
        ("vf -l 1 -- -s 127.0.0.1:6666", "Secondary ID is required!"),
        ("nfv 1 -l 1 -- -n 1", "Secondary ID 1 is already used!"),
        ("nfv x -l 1 -- -n 1", "Invalid secondary ID 'x'."),
    ],
)
def test_parse_launch_errors(line: str, message: str) -> None:
    with pytest.raises(CliError) as exc:
        parse_launch(line.split(), used_ids=[1])
    assert str(exc.value) == message


def test_launch_template_from_free_lcores() -> None:
    layout = [{"socket_id": 0, "cores": [{"core_id": i, "lcores": [i, i + 8]} for i in range(4)]}]
    usage = [{"proc-type": "primary", "master-lcore": 0, "lcores": [0, 1]}]
    free = free_lcores(layout, usage)
    assert free == [2, 3, 8, 9, 10, 11]
    cfg = CliConfig()
    assert launch_template("nfv", "1", cfg, "127.0.0.1", free) == "-l 2,3 -m 512 -- -n 1 -s 127.0.0.1:6666"
    assert launch_template("vf", "2", cfg, "10.0.0.1", free) == (
        "-l 2,3,8,9 -m 512 -- --client-id 2 -s 10.0.0.1:6666"
    )
    assert launch_template("pcap", "4", cfg, "127.0.0.1", free).endswith(
        "--client-id 4 -s 127.0.0.1:6666 -c phy:0"
    )
    assert launch_template("vf", "2", cfg, "127.0.0.1", [3]) is None  # not enough lcores


def test_flow_rule_body_matches_spec() -> None:
    line = (
        "phy:0 group 0 priority 0 ingress transfer pattern eth dst is 11:22:33:44:55:66 type mask 0xffff "
        "/ vlan vid is 100 / end actions queue index 1 / of_pop_vlan / end"
    )
    port, body = flow.parse_rule(line.split())
    assert port == 0
    assert body == {
        "rule": {
            "group": 0,
            "priority": 0,
            "direction": "ingress",
            "transfer": True,
            "pattern": ["eth dst is 11:22:33:44:55:66 type mask 0xffff", "vlan vid is 100"],
            "actions": ["queue index 1", "of_pop_vlan"],
        }
    }
    with pytest.raises(CliError, match="phy ports only"):
        flow.parse_rule(["ring:0", "pattern", "end", "actions", "end"])
    with pytest.raises(CliError, match="closed with '/ end'"):
        flow.parse_rule(_w("phy:0 pattern eth actions drop"))


def test_server_addr() -> None:
    assert parse_server_addr("192.168.1.101") == ("192.168.1.101", 7777)
    assert parse_server_addr("10.0.0.1:8888") == ("10.0.0.1", 8888)
    for bad in ("10.0.0:7777", "10.0.0.256", "host.example:7777", "10.0.0.1:80", "10.0.0.1:x"):
        with pytest.raises(ValueError):
            parse_server_addr(bad)


def test_error_lines() -> None:
    assert str(CtlError("sec_id 3 not found.", 404)) == "Error: sec_id 3 not found."
    assert (
        str(CtlUnreachable("127.0.0.1:7777"))
        == "Is not spp-ctl running on 127.0.0.1:7777, nor correct IP address?"
    )


# -- config ------------------------------------------------------------------------------------


def test_config_defaults_and_validation(tmp_path) -> None:
    cfg = CliConfig()
    assert cfg["max_secondary"] == 16 and cfg["prompt"] == "spp > " and cfg["sec_m_lcore"] == 2
    assert cfg["topo_sec_colors"][1] == "green" and cfg["topo_port_colors"]["ring"] == "yellow"
    assert cfg.set("sec_mem", "--socket-mem 512,512") == "--socket-mem 512,512"
    assert cfg.set("topo_size", "0.5") == "0.5"
    for key, bad in [
        ("max_secondary", "x"),
        ("sec_mem", "512"),
        ("sec_pcap_port", "vhost:1"),
        ("topo_size", "0%"),
    ]:
        with pytest.raises(CliError) as exc:
            cfg.set(key, bad)
        assert str(exc.value) == f'Invalid value "{bad}" for "{key}"'
    with pytest.raises(CliError, match='Invalid config key "nope"'):
        cfg.set("nope", "1")
    # SPP's default.yml layout, and a flat mapping
    f = tmp_path / "c.yml"
    f.write_text('max_secondary:\n  val: 8\n  desc: fewer\nprompt:\n  val: "x> "\n')
    loaded = CliConfig.load(str(f))
    assert loaded["max_secondary"] == 8 and loaded["prompt"] == "x> "
    f.write_text("sec_wait_launch: 0\n")
    assert CliConfig.load(str(f))["sec_wait_launch"] == 0.0
    f.write_text("sec_mem: 512\n")
    with pytest.raises(ConfigError, match='Invalid value "512" for "sec_mem"'):
        CliConfig.load(str(f))


# -- topology ----------------------------------------------------------------------------------

SPEC_NFV = {
    "client-id": 1,
    "status": "running",
    "ports": ["phy:0", "ring:0", "vhost:1"],
    "patches": [{"src": "phy:0", "dst": "ring:0"}, {"src": "ring:0", "dst": "vhost:1"}],
}
SPEC_VF = {
    "client-id": 2,
    "ports": ["phy:1", "ring:1"],
    "components": [
        {
            "core": 2,
            "name": "f",
            "type": "forward",
            "rx_port": [{"port": "phy:1"}],
            "tx_port": [{"port": "ring:1"}],
        }
    ],
}


def _normalized(dot: str) -> list[str]:
    """DOT lines with the node lists inside {...} sorted (SPP's order came from a Python set)."""
    out = []
    for line in dot.strip().splitlines():
        if line.startswith(("{rank=same;", "subgraph cluster0")):
            head, _, rest = line.partition("; " if line.startswith("{") else '" ')
            items = sorted(rest.rstrip("}").split("; "))
            line = f"{head} {items}"
        out.append(line)
    return sorted(out)


def test_dot_matches_spec_example() -> None:
    topo = Topology([_nfv_view(1, SPEC_NFV), _worker_view("vf", 2, SPEC_VF)])
    dot = topo.dot(CliConfig())
    spec = """digraph spp{
newrank=true;
node[shape="rectangle", style="filled"];
phy_1[label="phy:1", fillcolor="white"];
phy_0[label="phy:0", fillcolor="white"];
ring_1[label="ring:1", fillcolor="yellow"];
ring_0[label="ring:0", fillcolor="yellow"];
vhost_1[label="vhost:1", fillcolor="antiquewhite"];
{rank=same; phy_1; phy_0}
{rank=same; ring_1; ring_0}
{rank=same; vhost_1}
{rank=max; phy_1}
subgraph cluster0 {label="Host" phy_1; phy_0; ring_1; ring_0; vhost_1}
phy_0 -> ring_0[label="nfv:1", color="green", style="solid"];
ring_0 -> vhost_1[label="nfv:1", color="green", style="solid"];
phy_1 -> ring_1[label="vf:2:f", color="orange", style="solid"];
}"""
    # Same statements; only the (set-dependent) node order differs, and ours is sorted.
    ours = [ln for ln in _normalized(dot) if not ln.startswith("{rank=max")]
    theirs = [ln for ln in _normalized(spec) if not ln.startswith("{rank=max")]
    assert ours == theirs
    assert "{rank=max; phy_0}" in dot.splitlines()
    assert dot.splitlines()[3] == 'phy_0[label="phy:0", fillcolor="white"];'


def test_dot_subgraph_pcap_and_idle_style() -> None:
    nfv = dict(SPEC_NFV, status="idling")
    pcap = {
        "client-id": 4,
        "status": "idle",
        "core": [{"core": 2, "role": "receive", "rx_port": [{"port": "phy:0"}]}],
    }
    from spp.control.cli.topo import _pcap_view

    dot = Topology([_nfv_view(1, nfv), _pcap_view(4, pcap)]).dot(CliConfig(), {"vm1": "vhost:1;ring:0"})
    lines = dot.splitlines()
    assert 'phy_0 -> ring_0[label="nfv:1", color="green", style="dashed"];' in lines
    assert 'phy_0 -> spppcap_4[label="pcap:4", color="black", style="dashed"];' in lines
    assert 'spppcap_4[label="spppcap:4", fillcolor="gold2"];' in lines
    assert (
        'subgraph cluster0 {label="Host" phy_0; ring_0; vhost_1; spppcap_4; '
        'subgraph cluster1 {label="vm1" vhost_1;ring_0}}' in lines
    )


def test_term_drawing() -> None:
    assert draw_chain(["phy:0", "ring:0"]) == [
        "  +-------+   +--------+",
        "  | phy:0 |-->| ring:0 |",
        "  +-------+   +--------+",
    ]
    assert draw_fan(["ring:1"], ["ring:2", "ring:3"]) == [
        "  +--------+      +--------+",
        "  | ring:1 |--+-->| ring:2 |",
        "  +--------+  |   +--------+",
        "              |   +--------+",
        "              +-->| ring:3 |",
        "                  +--------+",
    ]
    topo = Topology(
        [_nfv_view(1, dict(SPEC_NFV, ports=[*SPEC_NFV["ports"], "phy:1"])), _worker_view("vf", 2, SPEC_VF)]
    )
    text = topo.term()
    assert text[0] == "nfv:1 [running]"
    assert text[2] == "  | phy:0 |-->| ring:0 |-->| vhost:1 |"
    assert "  not patched: phy:1" in text
    assert "vf:2" in text and "  f (forward)" in text
    # a loop (l2fwd) is drawn once, back to its start
    loop = {"status": "running", "ports": ["phy:0", "phy:1"], "patches": [
        {"src": "phy:0", "dst": "phy:1"}, {"src": "phy:1", "dst": "phy:0"}]}  # fmt: skip
    assert Topology([_nfv_view(1, loop)]).term()[2] == "  | phy:0 |-->| phy:1 |-->| phy:0 |"
