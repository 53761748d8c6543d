"""Two SPP instances on one host (different file prefixes and ports) share no file and no name."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from spp.engine.shm import segment_path
from spp.instance import DEFAULT_FILE_PREFIX, IFNAME_MAX, check_file_prefix, log_dir, tap_ifname
from spp.integrations.testbed import Testbed, TestbedError, free_port, wait_for
from tests.netutil import is_root


def test_default_prefix_keeps_spp_names() -> None:
    assert tap_ifname(DEFAULT_FILE_PREFIX, 0) == "vtap0"
    assert tap_ifname(DEFAULT_FILE_PREFIX, 12) == "vtap12"
    assert log_dir(DEFAULT_FILE_PREFIX) == Path("/tmp/spp-log")


def test_other_prefixes_get_distinct_valid_interface_names() -> None:
    prefixes = ["a", "vm1", "tenant-b", "x" * 10, "x" * 11, "pytest1234abcd", "spp2", "spp.dev", "a-tap1"]
    names = {}
    for prefix in prefixes:
        for num in (0, 1, 15, 9999):
            name = tap_ifname(prefix, num)
            assert 0 < len(name) <= IFNAME_MAX, name
            assert "/" not in name and ":" not in name and not any(c.isspace() for c in name)
            assert name not in names, f"{prefix}/{num} and {names.get(name)} both get {name}"
            names[name] = (prefix, num)
    assert tap_ifname("vm1", 0) == "vm1-tap0"  # short prefixes stay readable
    assert tap_ifname("x" * 11, 0).startswith("vt")  # too long for "-tap0": hashed
    assert not any(tap_ifname(p, 3) == "vtap3" for p in prefixes)


def test_log_dirs_follow_the_prefix() -> None:
    assert log_dir("vm1") == Path("/tmp/spp-log-vm1")
    assert log_dir("vm1") != log_dir("vm2") != log_dir(DEFAULT_FILE_PREFIX)


@pytest.mark.parametrize("prefix", ["", "../etc", "a/b", "a b", "-x", ".hidden", "x" * 65])
def test_unusable_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid file prefix"):
        check_file_prefix(prefix)


def test_primary_refuses_a_prefix_that_is_a_path() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "spp.processes.primary", "--file-prefix", "../x", "--", "-n", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert "--file-prefix: invalid file prefix '../x'" in r.stderr
    assert not Path("/dev/x.seg").exists() and not segment_path("../x").exists()


@pytest.mark.skipif(not is_root(), reason="needs root: creates TAP devices")
def test_two_instances_each_with_tap0_and_logs_do_not_collide() -> None:
    with contextlib.ExitStack() as stack:
        beds = [stack.enter_context(Testbed(nb_rings=1)) for _ in range(2)]
        assert beds[0].prefix != beds[1].prefix
        taps = []
        for bed in beds:
            nfv = bed.launch_nfv(1)  # the same client id in both: logs and rows are per instance
            nfv.add("tap:0")
            taps.append(tap_ifname(bed.prefix, 0))
        assert taps[0] != taps[1]
        for bed, tap in zip(beds, taps, strict=True):
            assert Path(f"/sys/class/net/{tap}").exists()
            assert "tap:0" in bed.nfv(1).status()["ports"]
            # the primary's default log directory, from its prefix: the launched nfv logs there
            assert bed.log_dir == log_dir(bed.prefix)
            assert (bed.log_dir / "spp_nfv-1.log").exists()
        assert beds[0].log_dir != beds[1].log_dir
        beds[0].nfv(1).delete("tap:0")
        wait_for(lambda: not Path(f"/sys/class/net/{taps[0]}").exists(), 5, f"{taps[0]} to go")
        assert Path(f"/sys/class/net/{taps[1]}").exists(), "the other instance's TAP is untouched"
    for bed in beds:
        assert not bed.log_dir.exists(), "a testbed removes the log directory it made"
        assert not segment_path(bed.prefix).exists()


def test_testbed_refuses_ports_in_use_and_drives_nothing() -> None:
    with Testbed(nb_rings=1) as user:
        user.launch_nfv(1)
        before = user.processes()
        with pytest.raises(TestbedError, match=f"port {user.api_port} on 127.0.0.1 is in use"):
            Testbed(nb_rings=1, api_port=user.api_port).start()
        with pytest.raises(TestbedError, match=f"port {user.sec_port} on 127.0.0.1 is in use"):
            Testbed(nb_rings=1, sec_port=user.sec_port).start()
        assert user.processes() == before


def test_testbed_with_a_prefix_in_use_leaves_the_other_segment_alone() -> None:
    with Testbed(nb_rings=1) as user:
        other = Testbed(nb_rings=1, prefix=user.prefix, api_port=free_port())
        with pytest.raises(TestbedError, match="spp-primary exited"):
            other.__enter__()
        assert segment_path(user.prefix).exists()
        assert {"type": "primary"} in user.processes()


def test_free_ports_are_below_the_ephemeral_range_and_not_spp_defaults() -> None:
    """A port from the ephemeral range can go to any outgoing connection before a listener
    binds it; one below cannot."""
    start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(50)}
    assert all(1024 <= p < start for p in ports)
    assert not ports & {5555, 6666, 7777}
