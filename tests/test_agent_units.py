"""spp-agent's pieces without a data plane: the key values, the configuration and devstack's
generator, option parsing; and the tools and the agent process against a real local etcd."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from spp.integrations.agent import keys
from spp.integrations.agent.cli import _config_defaults
from spp.integrations.agent.etcd import parse_endpoints
from spp.integrations.agent.keys import BadValue, BindPort, TapInfo
from spp.integrations.agent.layout import build_configuration, parse_configuration, parse_mappings
from spp.integrations.agent.localetcd import LocalEtcd
from tests.agentbed import EtcdView


def test_devstack_configuration_two_nics_and_mirrors():
    mappings = parse_mappings("00:04.0#phys1#2#0xfe,00:05.0#phys2#2#0xfc02")
    config = build_configuration(mappings, "2#0x30002")
    vf1, vf2 = config["vf"]
    assert [c["core"] for c in vf1["components"]] == [2, 3, 4, 5, 6, 7]
    assert [c["core"] for c in vf2["components"]] == [10, 11, 12, 13, 14, 15]
    assert vf1["components"][0] == {
        "core": 2, "type": "forward", "name": "forward_0_tx", "rx_port": ["ring:0"], "tx_port": ["vhost:0"],
    }  # fmt: skip
    assert vf2["components"][4] == {
        "core": 14, "type": "classifier_mac", "name": "classifier", "rx_port": ["phy:1"],
        "tx_port": ["ring:4", "ring:6"],
    }  # fmt: skip
    assert vf2["components"][5]["rx_port"] == ["ring:5", "ring:7"]
    assert config["mirror"] == [
        {"core": 16, "ports": ["ring:8", "ring:9"]},
        {"core": 17, "ports": ["ring:10", "ring:11"]},
    ]
    layout = parse_configuration(json.dumps(config))
    v3 = layout.vhosts[3]
    assert (v3.client_id, v3.physnet) == (2, "phys2")
    assert (v3.del_vlan_port, v3.del_vlan_comp, v3.add_vlan_port, v3.add_vlan_comp) == (
        "ring:6", "classifier", "ring:7", "merger",
    )  # fmt: skip
    assert (v3.in_comp, v3.in_ring, v3.out_comp, v3.out_ring) == (
        "forward_3_tx",
        "ring:6",
        "forward_3_rx",
        "ring:7",
    )
    # the vhost-facing forwarder becomes a merge, so a tap can give it a second ring
    assert layout.vfs[0].components[0].type == "merge"
    assert layout.mirror_client_id == 3 and layout.mirrors[1].name == "mirror_1"


def test_omitting_forwarders_configuration():
    comps = [
        {
            "core": 2,
            "type": "classifier_mac",
            "name": "classifier",
            "rx_port": ["phy:0"],
            "tx_port": ["vhost:0"],
        },
        {"core": 3, "type": "merge", "name": "merger", "rx_port": ["vhost:0"], "tx_port": ["phy:0"]},
    ]
    layout = parse_configuration(json.dumps({"vf": [{"physical_network": "p", "components": comps}]}))
    v0 = layout.vhosts[0]
    assert (v0.del_vlan_port, v0.del_vlan_comp, v0.add_vlan_port, v0.add_vlan_comp) == (
        "vhost:0", "classifier", "vhost:0", "merger",
    )  # fmt: skip
    assert v0.in_comp is None and v0.out_comp is None  # no TaaS here


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("00:04.0#phys1#2#xfc02", "not hexadecimal"),  # the devstack docs' typo
        ("00:04.0#phys1#2", "PCI#physical_network"),
        ("00:04.0#phys1#0#0xfe", "positive"),
        ("", "no mappings"),
    ],
)
def test_bad_mappings_say_what_is_wrong(text, problem):
    with pytest.raises(BadValue, match=problem):
        parse_mappings(text)
    with pytest.raises(BadValue, match="cores"):
        build_configuration(parse_mappings("00:04.0#phys1#4#0xfe"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"mac_address": "fa:16:3e:00:00:01"}', "vhost_id"),
        ('{"mac_address": "fa:16:3e:00:00:01", "vhost_id": "1"}', "vhost_id"),
        ('{"mac_address": "nope", "vhost_id": 1}', "MAC"),
        ('{"mac_address": "fa:16:3e:00:00:01", "vhost_id": 1, "vlan_id": 0}', "vlan_id"),
    ],
)
def test_bad_bind_port_values(text, problem):
    with pytest.raises(BadValue, match=problem):
        BindPort.parse(text)


def test_values_round_trip_as_the_drivers_write_them():
    bp = BindPort.parse('{"mac_address": "FA:16:3E:7D:CC:35", "vhost_id": 2, "vlan_id": 475}')
    assert bp == BindPort("fa:16:3e:7d:cc:35", 2, 475)
    assert json.loads(bp.dumps()) == {"mac_address": "fa:16:3e:7d:cc:35", "vhost_id": 2, "vlan_id": 475}
    assert "vlan_id" not in BindPort.parse(BindPort("fa:16:3e:7d:cc:35", 0, None).dumps()).dumps()
    tap = TapInfo.parse('{"service_port": "a", "source_port": "b", "mirror_in": 0, "mirror_out": null}')
    assert tap == TapInfo("a", "b", 0, None)
    with pytest.raises(BadValue):
        TapInfo.parse('{"service_port": "a", "source_port": "b", "mirror_in": null, "mirror_out": null}')
    assert keys.key("port_status", "compute1", "p") == "/spp/openstack/port_status/compute1/p"
    assert keys.vhost_key("compute1", "phys1", 3) == "/spp/openstack/vhost/compute1/phys1/3"


def test_endpoints_and_neutron_config_files(tmp_path):
    assert parse_endpoints("10.0.0.1:2379, http://10.0.0.2:2379") == [("10.0.0.1", 2379), ("10.0.0.2", 2379)]
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_endpoints("10.0.0.1")
    ml2 = tmp_path / "ml2_conf.ini"
    ml2.write_text(
        "[DEFAULT]\nhost = compute7\n[spp]\netcd_host = 10.1.1.1\netcd_port = 2399\napi_port = 7778\n"
    )
    assert _config_defaults([str(ml2)]) == {
        "host": "compute7",
        "etcd": "10.1.1.1:2399",
        "api": "127.0.0.1:7778",
    }


def agent_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spp.integrations.agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_config_build_and_destroy_touch_only_their_host():
    with LocalEtcd() as etcd:
        e = ["--etcd", etcd.endpoint]
        for host in ("spp4", "spp40"):
            r = agent_cli(
                "config",
                "build",
                *e,
                "--host",
                host,
                "--mappings",
                "00:04.0#phys1#2#0xfe",
                "--mirror",
                "1#0x101",
            )
            assert r.returncode == 0, r.stderr
        view = EtcdView(etcd.endpoint)
        assert view.get(keys.vhost_key("spp4", "phys1", 1)) == keys.FREE
        assert view.get(keys.key("mirror", "spp4", 0)) == keys.FREE
        # bound ports make a rebuild refuse (it would orphan them) unless forced
        view.put(keys.vhost_key("spp4", "phys1", 0), "port-x")
        r = agent_cli("config", "build", *e, "--host", "spp4", "--mappings", "00:04.0#phys1#2#0xfe")
        assert r.returncode == 1 and "bound ports" in r.stderr
        r = agent_cli("status", *e)
        assert r.returncode == 0
        assert "host spp4: agent DOWN, 1/2 vhosts free" in r.stdout
        assert "host spp40: agent DOWN, 2/2 vhosts free" in r.stdout
        assert agent_cli("config", "destroy", *e, "--host", "spp4").returncode == 0
        left = view.prefix(keys.ROOT)
        assert left and all("spp40" in k for k in left)
        # a port plug on a host without configuration says so
        r = agent_cli(
            "port", "plug", *e, "--host", "spp4", "--physnet", "phys1", "--mac", "fa:16:3e:00:00:01"
        )
        assert r.returncode == 1 and "no configuration" in r.stderr
        r = agent_cli(
            "port", "plug", *e, "--host", "spp40", "--physnet", "physX", "--mac", "fa:16:3e:00:00:01"
        )
        assert r.returncode == 1 and "no physical network 'physX'" in r.stderr
        # spp40 is configured but no agent serves it: the plug says so at once (it would wait
        # --timeout for an "up" that never comes) and claims nothing; so does a tap
        r = agent_cli(
            "port", "plug", *e, "--host", "spp40", "--physnet", "phys1", "--mac", "fa:16:3e:00:00:01",
            "--timeout", "600",
        )  # fmt: skip
        assert r.returncode == 1 and "no spp-agent is alive on host spp40" in r.stderr, r.stderr
        assert set(view.prefix(keys.vhost_prefix("spp40")).values()) == {keys.FREE}
        assert view.prefix(keys.host_prefix("bind_port", "spp40")) == {}
        for port, vhost in (("svc", 0), ("src", 1)):
            view.put(keys.key("bind_port", "spp40", port), BindPort("fa:16:3e:00:00:01", vhost, None).dumps())
        r = agent_cli(
            "tap", "create", *e, "--service-port", "svc", "--source-port", "src", "--direction", "IN",
            "--timeout", "600",
        )  # fmt: skip
        assert r.returncode == 1 and "no spp-agent is alive on host spp40" in r.stderr, r.stderr
        assert set(view.prefix(keys.host_prefix("mirror", "spp40")).values()) == {keys.FREE}


def test_a_private_etcd_that_cannot_start_says_why():
    """``spp-agent etcd`` on a port already taken: exit 1 with etcd's reason (the start-up
    ``--local-etcd`` shares)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = agent_cli("etcd", "--port", str(port))
        assert r.returncode == 1 and r.stderr.startswith("spp-agent: ")
        assert "address already in use" in r.stderr


def test_agent_waits_for_its_configuration_and_exits_0_on_sigterm(tmp_path):
    log = tmp_path / "agent.log"
    with LocalEtcd() as etcd, open(log, "w") as err:
        argv = [sys.executable, "-m", "spp.integrations.agent", "--etcd", etcd.endpoint, "--host", "lonely"]
        p = subprocess.Popen([*argv, "--api", "127.0.0.1:9"], stderr=err)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "no configuration for host lonely" not in log.read_text():
                time.sleep(0.1)
            p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = log.read_text()
    assert "no configuration for host lonely" in text and "Traceback" not in text


def test_component_conf_replaces_the_generated_components(tmp_path):
    """devstack's SPP_COMPONENT_CONF: the "omitting forwarders" layout, many vhosts on 2 cores."""
    conf = tmp_path / "components.yaml"
    conf.write_text(
        "vf:\n"
        "  - components:\n"
        "      - {core: 2, type: classifier_mac, name: classifier, rx_port: ['phy:0'],"
        " tx_port: ['vhost:0', 'vhost:1', 'vhost:2']}\n"
        "      - {core: 3, type: merge, name: merger, rx_port: ['vhost:0', 'vhost:1', 'vhost:2'],"
        " tx_port: ['phy:0']}\n"
    )
    with LocalEtcd() as etcd:
        r = agent_cli(
            "config", "build", "--etcd", etcd.endpoint, "--host", "c1",
            "--mappings", "00:04.0#phys1#3#0x6", "--component-conf", str(conf),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["vf"][0]["components"][0]["core"] == 2
        vhosts = EtcdView(etcd.endpoint).prefix(keys.vhost_prefix("c1"))
        assert sorted(vhosts) == [keys.vhost_key("c1", "phys1", i) for i in range(3)]
        assert set(vhosts.values()) == {keys.FREE}
    assert (
        len(build_configuration(parse_mappings("0#p#30#" + hex((1 << 64) - 2)))["vf"][0]["components"]) == 62
    )


@pytest.mark.parametrize("use_it_first", [True, False], ids=["in-use", "at-once"])
def test_local_etcd_command_says_where_and_stops_on_sigterm(use_it_first):
    """``spp-agent etcd`` prints where it listens and stops cleanly on SIGTERM: exit 0, its etcd
    and data directory gone, also when the signal comes the moment it says ready (before the
    event loop has taken over the signals; three times, to meet that window)."""
    from pathlib import Path

    for _ in range(1 if use_it_first else 3):
        p = subprocess.Popen(
            [sys.executable, "-m", "spp.integrations.agent", "etcd"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = p.stdout.readline()
            if not use_it_first:
                p.send_signal(signal.SIGTERM)
            assert line.startswith("etcd listening on 127.0.0.1:"), line + p.stderr.read()
            data_dir = line.split("(data in ")[1].split(")")[0]
            if use_it_first:
                EtcdView(line.split()[3]).put("/x", "y")
                p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 0, p.stderr.read()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert not Path(data_dir).exists()
        etcds = subprocess.run(["pgrep", "-f", f"data-dir {data_dir}/"], capture_output=True, text=True)
        assert etcds.stdout == "", "the private etcd outlived its command"


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_bad_tap_claim_grace_is_refused(value):
    r = subprocess.run(
        [sys.executable, "-m", "spp.integrations.agent", "--etcd", "127.0.0.1:1", "--tap-claim-grace", value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and f"--tap-claim-grace: {float(value)} is not a number of seconds" in r.stderr
