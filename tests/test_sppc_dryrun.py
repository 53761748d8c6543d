"""``sppc app ... --dry-run``: the printed command against SPP's container tools' own command lines
(shared/spec/spp-tools.md §1.6, printed with ``SPP_CTL_IP=192.168.1.100``), for the same options.

The command inside the container is compared word for word; the engine options are compared with
SPP's after the deliberate differences, each listed here. The sppc program runs for real, with a
PATH that has no podman or docker, so a dry run that called an engine would fail.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spp.integrations.containers import build
from spp.integrations.containers.engine import Engine
from spp.integrations.containers.launch import SppcError, parse_devices

SPPC = str(Path(sys.executable).with_name("sppc"))
PODMAN = Engine.named("podman", "runc")
IMAGE = "localhost/spp-sppc:latest"

# SPP's dry runs (spec §1.6): the words after the image.
SPEC_PRIMARY = (
    "spp_primary -l 0 -n 4 -m 1024 --proc-type primary --vdev eth_vhost1,iface=/tmp/sock1 "
    "--vdev eth_vhost2,iface=/tmp/sock2 --file-prefix sppc_spp_fp -- -p 0x03 -n 10 -s 192.168.1.100:5555"
)
SPEC_NFV = (
    "spp_nfv -l 1-2 -n 4 -m 1024 --proc-type secondary --file-prefix sppc_spp_fp "
    "-- -n 1 -s 192.168.1.100:6666"
)
SPEC_TESTPMD = (
    "testpmd -l 3-4 -n 4 -m 1024 --proc-type auto --vdev virtio_user1,queues=1,path=/var/run/usvhost1 "
    "--vdev virtio_user2,queues=1,path=/var/run/usvhost2 -b 0000:0a:00.0 -b 0000:0a:00.1 "
    "--file-prefix sppc-testpmd-HEX -- --interactive"
)


def sppc(*words: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real sppc program with no container engine reachable."""
    base = {
        "PATH": str(Path(sys.executable).parent),  # python and our console scripts only
        "SPP_CTL_IP": "192.168.1.100",
        "SPP_FILE_PREFIX": "sppc_spp_fp",
        "HOME": os.environ.get("HOME", "/root"),
    }
    base.update(env or {})
    return subprocess.run([SPPC, *words], capture_output=True, text=True, env=base, timeout=60)


def dry_run(*words: str, env: dict[str, str] | None = None) -> list[str]:
    cut = words.index("--") if "--" in words else len(words)
    opts = ["--engine", "podman", "--runtime", "runc", "--dry-run"]
    r = sppc("app", *words[:cut], *opts, *words[cut:], env=env)
    assert r.returncode == 0, r.stderr
    assert "\\\n" in r.stdout  # one option per line, as SPP printed it
    return shlex.split(r.stdout.replace("\\\n", " "))  # a shell joins continued lines


def split(words: list[str]) -> tuple[list[str], list[str]]:
    """(engine options, command in the container), split at the image."""
    i = words.index(IMAGE)
    head = ["podman", "run", "--runtime", "runc", "--ulimit", "nofile=20000:20000"]
    assert words[: len(head)] == head
    assert words[len(head) : len(head) + 2] == ["--ulimit", "nproc=32768:32768"]
    return words[len(head) + 2 : i], words[i + 1 :]


def test_primary_matches_spp() -> None:
    opts, inner = split(dry_run("spp-primary", "-l", "0", "-p", "0x03", "-d", "vhost:1,vhost:2"))
    assert inner == SPEC_PRIMARY.replace("spp_primary", "spp-primary").split()
    # SPP: -d --privileged -v /dev/hugepages:/dev/hugepages -v /var/run/:/var/run/ -v /tmp:/tmp.
    # Ours: the segment lives in /dev/shm (no hugepages), and the host's PID and network namespaces
    # (process table pids, spp-ctl on 127.0.0.1, phy ports); named and labelled.
    assert opts == [
        "-d", "--privileged", "-v", "/dev/shm:/dev/shm", "-v", "/tmp:/tmp", "--pid", "host",
        "--name", "sppc-sppc_spp_fp-primary", "--network", "host",
        "--label", "spp.sppc=1", "--label", "spp.app=spp-primary",
    ]  # fmt: skip


def test_nfv_matches_spp() -> None:
    opts, inner = split(dry_run("spp-nfv", "-i", "1", "-l", "1-2"))
    assert inner == SPEC_NFV.replace("spp_nfv", "spp-nfv").split()
    assert opts[:8] == ["-d", "--privileged", "-v", "/dev/shm:/dev/shm", "-v", "/tmp:/tmp", "--pid", "host"]
    assert opts[opts.index("--name") + 1] == "sppc-sppc_spp_fp-nfv1"


def test_testpmd_matches_spp_with_its_own_file_prefix() -> None:
    words = dry_run(
        "testpmd", "-l", "3-4", "-d", "vhost:1,vhost:2", "-fg", "-i", "-b", "0000:0a:00.0", "0000:0a:00.1"
    )
    opts, inner = split(words)
    prefix = inner[inner.index("--file-prefix") + 1]
    assert prefix.startswith("sppc-testpmd-") and len(prefix) == len("sppc-testpmd-") + 16
    expected = SPEC_TESTPMD.replace("HEX", prefix.removeprefix("sppc-testpmd-")).split()
    # Ours: Debian's binary name, DPDK's canonical vdev name, no hugepages (virtio-user shares memfd
    # memory) and no PCI probing unless -w names devices.
    expected[0] = "dpdk-testpmd"
    expected = [w.replace("virtio_user", "net_virtio_user") for w in expected]
    expected[expected.index("--proc-type") + 2 : expected.index("--proc-type") + 2] = [
        "--no-huge",
        "--no-pci",
    ]
    assert inner == expected
    assert opts[:2] == ["-it", "--privileged"]
    assert opts[2:6] == ["-v", "/tmp/sock1:/var/run/usvhost1", "-v", "/tmp/sock2:/var/run/usvhost2"]
    assert opts[opts.index("--network") + 1] == "none"


def test_ctl_ip_option_beats_the_environment() -> None:
    """SPP let $SPP_CTL_IP override -ip; an explicit option wins here."""
    _, inner = split(dry_run("spp-nfv", "-i", "3", "-l", "1-2", "-ip", "10.0.0.9"))
    assert inner[-2:] == ["-s", "10.0.0.9:6666"]
    _, inner = split(dry_run("spp-nfv", "-i", "3", "-l", "1-2"))
    assert inner[-2:] == ["-s", "192.168.1.100:6666"]
    _, inner = split(dry_run("spp-nfv", "-i", "3", "-l", "1-2", env={"SPP_CTL_IP": ""}))
    assert inner[-2:] == ["-s", "127.0.0.1:6666"]


@pytest.mark.parametrize("app", ["spp-vf", "spp-mirror"])
def test_vf_and_mirror_take_an_id_like_nfv(app: str) -> None:
    _, inner = split(dry_run(app, "-i", "2", "-l", "2-3", "--vhost-client"))
    assert inner[0] == app
    assert inner[inner.index("--") :] == [
        "--",
        "--client-id",
        "2",
        "-s",
        "192.168.1.100:6666",
        "--vhost-client",
    ]
    assert inner[inner.index("--file-prefix") + 1] == "sppc_spp_fp"


def test_pcap_mounts_its_output_directory(tmp_path: Path) -> None:
    opts, inner = split(
        dry_run("spp-pcap", "-i", "4", "-l", "2-3", "-cp", "phy:0", "--out-dir", str(tmp_path))
    )
    assert f"{tmp_path}:{tmp_path}" in opts or str(tmp_path).startswith("/tmp")
    assert inner[inner.index("--") :][:7] == [
        "--",
        "--client-id",
        "4",
        "-s",
        "192.168.1.100:6666",
        "-c",
        "phy:0",
    ]


def test_apps_and_tools_never_share_the_instances_file_prefix() -> None:
    spp_prefixes = {
        build("spp-primary", ["-l", "0", "-p", "0x1"], engine=PODMAN).file_prefix,
        build("spp-nfv", ["-l", "0-1", "-i", "1"], engine=PODMAN).file_prefix,
        build("spp-vf", ["-l", "0-1", "-i", "2", "--name", "x"], engine=PODMAN).file_prefix,
    }
    assert spp_prefixes == {os.environ.get("SPP_FILE_PREFIX") or "spp"}  # --name changes nothing
    seen = set()
    for _ in range(3):
        la = build("testpmd", ["-l", "0-1", "-d", "vhost:1"], engine=PODMAN)
        assert la.file_prefix not in spp_prefixes and la.file_prefix not in seen
        seen.add(la.file_prefix)
    named = build("testpmd", ["-l", "0-1", "-d", "vhost:1", "--name", "tp1"], engine=PODMAN)
    assert named.name == "tp1" and named.file_prefix.startswith("sppc-tp1-")
    # The traffic tools have no DPDK prefix: their pool is private to the container (own /dev/shm).
    tool = build("spp-l2fwd", ["-l", "1", "-d", "vhost:2,vhost:3"], engine=PODMAN)
    assert tool.file_prefix is None and "/dev/shm:/dev/shm" not in tool.argv
    assert tool.inner == ["spp-l2fwd", "--vhost-dir", "/var/run/spp", "virtio_user:2", "virtio_user:3"]
    assert tool.argv[tool.argv.index("--cpuset-cpus") + 1] == "1"


def test_image_names_contain_spp() -> None:
    assert "spp" in build("spp-nfv", ["-i", "1", "-l", "0-1"], engine=PODMAN).image
    r = sppc("build", "--dry-run")
    assert r.returncode == 0, r.stderr
    names = [line.split()[1].rstrip(":") for line in r.stdout.splitlines()]
    assert len(names) == 2 and all("spp" in n for n in names)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["spp-nfv", "-l", "1"], "-i/--sec-id"),
        (["spp-nfv", "-i", "1"], "-l LIST or -c MASK"),
        (["spp-nfv", "-i", "200", "-l", "1"], "1..127"),
        (["spp-primary", "-p", "0x1"], "-l LIST or -c MASK"),
        (["testpmd", "-l", "1", "-d", "ring:1"], "'ring' is not supported"),
        (["testpmd", "-l", "1", "-d", "memif:0"], "memif"),
        (["testpmd", "-l", "1", "-i", "--tx-first"], "--tx-first"),
        (["testpmd", "-l", "1", "--burst", "1000"], "--burst 1000"),
        (["testpmd", "-l", "1", "-b", "x", "-w", "y"], "-b and -w"),
        (["spp-l2fwd", "-d", "vhost:1", "-p", "0x3"], "only 1 device"),
        (["nosuchapp"], "unknown app"),
        (["testpmd", "-l", "1", "--dist-ver", "16.04"], "only debian 12"),
    ],
)
def test_bad_options_are_named_and_fail(words: list[str], message: str) -> None:
    r = sppc("app", *words, "--dry-run")
    assert r.returncode != 0
    assert message in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(SppcError):
        build(words[0], words[1:], engine=PODMAN)


def test_primary_without_phy_ports() -> None:
    """SPP required -p; a primary with rings only (and --iface for phy ports) needs none."""
    _, inner = split(dry_run("spp-primary", "-l", "0", "-n", "2"))
    assert inner[inner.index("--") :] == ["--", "-n", "2", "-s", "192.168.1.100:5555"]
    _, inner = split(dry_run("spp-primary", "-l", "0", "-p", "0x1", "--iface", "veth0"))
    assert inner[inner.index("--") :] == [
        "--",
        "-p",
        "0x1",
        "-n",
        "10",
        "-s",
        "192.168.1.100:5555",
        "--iface",
        "veth0",
    ]


def test_device_ids_in_both_of_spps_forms() -> None:
    assert [str(d) for d in parse_devices("vhost:1,tap:2")] == ["vhost:1", "tap:2"]
    assert [str(d) for d in parse_devices("1,3-5")] == ["vhost:1", "vhost:3", "vhost:4", "vhost:5"]


def test_dry_run_has_no_side_effects() -> None:
    """No engine is reachable (PATH above) and none is asked: no container appears."""
    before = _containers()
    words = dry_run("spp-pktgen", "-d", "vhost:1", "--name", "sppc-dry-test", "--", "--count", "10")
    assert words[-4:] == ["--rx", "virtio_user:1", "--count", "10"]
    assert _containers() == before


def _containers() -> str:
    if shutil.which("podman") is None:
        return ""
    return subprocess.run(
        ["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True
    ).stdout


def test_docker_goes_to_sppcs_own_dockerd() -> None:
    """docker is reached through sppc's dockerd (its own socket and data root), never the host's."""
    r = sppc("app", "spp-l2fwd", "-d", "vhost:1,vhost:2", "--engine", "docker", "--dry-run")
    assert r.returncode == 0, r.stderr
    words = shlex.split(r.stdout.replace("\\\n", " "))
    assert words[:4] == ["docker", "-H", "unix:///run/spp-docker/docker.sock", "run"]
    assert "--runtime" not in words and "--network" in words
    from spp.integrations.containers.engine import dockerd_argv

    argv = dockerd_argv()
    assert {"--iptables=false", "--bridge=none"} <= set(argv)
    assert argv[argv.index("--data-root") + 1] == "/var/lib/spp-docker"
