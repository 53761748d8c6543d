"""The multi-host harness itself (spp/integrations/multihost.py): a real 3-member etcd cluster and
three hosts in namespaces, each with its own spp-ctl, primary, spp_vf and spp_mirror, seen from
the root namespace with the real ``spp`` CLI; a member killed and restarted; a host cut off and
healed; nothing left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from spp.integrations.multihost import MultiHost
from tests.cli_doubles import run_cli
from tests.leakcheck import short_tag

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and veths"),
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server not installed (scripts/install.sh)"),
]


def etcdctl(endpoints: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["etcdctl", "--endpoints", ",".join(endpoints), "--command-timeout", "30s", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def mh() -> Iterator[MultiHost]:
    with MultiHost(tag=short_tag()) as bed:
        yield bed


def spp(mh: MultiHost, *commands: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    args: list[str] = []
    for host in mh.hosts[1:]:
        args += ["-b", host.api]
    res = run_cli(mh.hosts[0].api, *commands, args=tuple(args), home=tmp_path, cwd=tmp_path)
    assert "Traceback" not in res.stderr
    return res


def test_every_host_runs_its_own_stack_and_the_cli_sees_them_all(mh: MultiHost, tmp_path: Path) -> None:
    assert etcdctl(mh.endpoints, "endpoint", "health").returncode == 0
    members = etcdctl(mh.endpoints[:1], "member", "list").stdout
    assert sorted(line.split(", ")[2] for line in members.splitlines()) == ["e1", "e2", "e3"]
    prefixes = {h.prefix for h in mh.hosts}
    assert len(prefixes) == 3 and all(Path(f"/dev/shm/spp_{p}.seg").exists() for p in prefixes)
    res = spp(mh, "server status", "server 3", "status", tmp_path=tmp_path)
    h1, h2, h3 = (h.api for h in mh.hosts)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"  1: {h1} *  primary running, secondary vf:1 mirror:2",
        f"  2: {h2}    primary running, secondary vf:1 mirror:2",
        f"  3: {h3}    primary running, secondary vf:1 mirror:2",
        f'Switch spp-ctl to "3: {h3}".',
        "- spp-ctl:",
        f"  - address: {h3}",
        "- primary:",
        "  - status: running",
        "- secondary:",
        "  - processes:",
        "    1: vf:1",
        "    2: mirror:2",
    ]


def test_a_killed_member_misses_nothing_once_restarted(mh: MultiHost) -> None:
    key = f"/spp-mh-test/{uuid.uuid4().hex}"
    mh.etcd.kill_member("e1")
    try:
        # the two left elect a leader if e1 was it (seconds on a loaded machine), then take writes
        mh.etcd.wait_healthy(120, only=mh.etcd.members[1:])
        res = etcdctl(mh.endpoints[1:], "put", key, "written-while-e1-down")
        assert res.returncode == 0, res.stderr
    finally:
        mh.etcd.restart_member("e1")
    # a serializable read answers from e1's own copy: it caught up with what it missed
    res = etcdctl(mh.endpoints[:1], "get", key, "--print-value-only", "--consistency=s")
    assert res.stdout.strip() == "written-while-e1-down"
    assert etcdctl(mh.endpoints, "del", key).stdout.strip() == "1"


def test_a_cut_off_host_is_named_and_comes_back(mh: MultiHost, tmp_path: Path) -> None:
    host = mh.hosts[1]
    host.cut()
    try:
        res = spp(mh, "server status", tmp_path=tmp_path)
        lines = res.stdout.splitlines()
        assert lines[1].startswith(f"  2: {host.api}    unreachable: no reply from spp-ctl at {host.api}")
        assert lines[0].endswith("primary running, secondary vf:1 mirror:2")
        assert lines[2].endswith("primary running, secondary vf:1 mirror:2")
        assert res.stderr.splitlines() == [f"Error: 1 of 3 spp-ctl did not answer: {host.api}"]
        # inside, the host goes on: its processes still talk to their spp-ctl
        inside = subprocess.run(
            ["ip", "netns", "exec", host.ns, "curl", "-s", f"http://{host.api}/v1/processes"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert '"type": "vf"' in inside.stdout
    finally:
        host.heal()
    res = spp(mh, "server status", tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr


def test_close_leaves_nothing_behind() -> None:
    tag = short_tag()
    bed = MultiHost(tag=tag, n_etcd=1, n_hosts=1)
    with bed:
        pids = [p.pid for h in bed.hosts for p in h.procs.values()]
        pids += [m.proc.pid for m in bed.etcd.members if m.proc]
    assert tag not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert tag not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not bed.workdir.exists()
    assert not [p for p in Path("/dev/shm").iterdir() if tag in p.name]
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
