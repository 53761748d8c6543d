"""``server`` and ``status all`` of the real ``spp`` CLI against three real spp-ctls, each with its
own primary (and a vf or a mirror), as an operator driving several hosts would use them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spp.integrations.testbed import Testbed
from tests.cli_doubles import run_cli


@pytest.fixture
def beds() -> Iterator[list[Testbed]]:
    started: list[Testbed] = []
    try:
        for _ in range(3):
            bed = Testbed(nb_rings=2)
            started.append(bed)
            bed.start()
        started[0].start_worker("vf", 1)
        started[2].start_worker("mirror", 2)
        yield started
    finally:
        for bed in started:
            if not bed.http.is_closed:  # a test may have stopped one already
                bed.close()


def addr(bed: Testbed) -> str:
    return f"127.0.0.1:{bed.api_port}"


def spp(beds: list[Testbed], *commands: str, tmp_path: Path) -> tuple[int, list[str], list[str]]:
    args: list[str] = []
    for bed in beds[1:]:
        args += ["-b", addr(bed)]
    res = run_cli(addr(beds[0]), *commands, args=tuple(args), home=tmp_path, cwd=tmp_path)
    assert "Traceback" not in res.stderr
    return res.returncode, res.stdout.splitlines(), res.stderr.splitlines()


def test_switch_between_real_servers_by_index_and_address(beds: list[Testbed], tmp_path: Path) -> None:
    a, b, c = (addr(x) for x in beds)
    rc, out, err = spp(
        beds, "server", "status", f"server {c}", "status", "server 2", "vf 1; status", tmp_path=tmp_path
    )
    assert out[:3] == [f"  1: {a} *", f"  2: {b}", f"  3: {c}"]
    assert out[3:11] == [
        "- spp-ctl:",
        f"  - address: {a}",
        "- primary:",
        "  - status: running",
        "- secondary:",
        "  - processes:",
        "    1: vf:1",
        f'Switch spp-ctl to "3: {c}".',
    ]
    assert out[11:18] == [
        "- spp-ctl:",
        f"  - address: {c}",
        "- primary:",
        "  - status: running",
        "- secondary:",
        "  - processes:",
        "    1: mirror:2",
    ]
    assert out[18:] == [f'Switch spp-ctl to "2: {b}".']
    # server 2 has no vf: the command went to the server switched to, not to the first one
    assert err == ['"vf 1" does not exist.']
    assert rc == 1


def test_every_server_at_once(beds: list[Testbed], tmp_path: Path) -> None:
    a, b, c = (addr(x) for x in beds)
    rc, out, err = spp(beds, "server status", "status all", tmp_path=tmp_path)
    assert (rc, err) == (0, [])
    assert out[:3] == [
        f"  1: {a} *  primary running, secondary vf:1",
        f"  2: {b}    primary running, secondary none",
        f"  3: {c}    primary running, secondary mirror:2",
    ]
    blocks = "\n".join(out[3:]).split("\n\n")
    assert [block.splitlines()[1] for block in blocks] == [f"  - address: {x}" for x in (a, b, c)]
    assert blocks[0].splitlines()[-1] == "    1: vf:1"
    assert blocks[1].splitlines()[-1] == "  - processes:"
    assert blocks[2].splitlines()[-1] == "    1: mirror:2"


def test_a_server_that_went_away_is_named_and_the_others_still_shown(
    beds: list[Testbed], tmp_path: Path
) -> None:
    a, b, c = (addr(x) for x in beds)
    beds[1].close()  # its spp-ctl and primary are gone; the port refuses connections
    rc, out, err = spp(beds, "server status", "status all", "server 3", "status", tmp_path=tmp_path)
    assert out[:3] == [
        f"  1: {a} *  primary running, secondary vf:1",
        f"  2: {b}    unreachable: Is not spp-ctl running on {b}, nor correct IP address?",
        f"  3: {c}    primary running, secondary mirror:2",
    ]
    blocks = "\n".join(out[3:22]).split("\n\n")
    assert blocks[1].splitlines() == [
        "- spp-ctl:",
        f"  - address: {b}",
        f"  - error: Is not spp-ctl running on {b}, nor correct IP address?",
    ]
    assert [len(block.splitlines()) for block in blocks] == [7, 3, 7]
    assert out[22] == f'Switch spp-ctl to "3: {c}".'
    assert out[-1] == "    1: mirror:2"
    assert err == [f"Error: 1 of 3 spp-ctl did not answer: {b}"] * 2
    assert rc == 1


def test_add_and_del_real_servers(beds: list[Testbed], tmp_path: Path) -> None:
    a, b, c = (addr(x) for x in beds)
    res = run_cli(
        a,
        "server del 1",
        f"server add {b}",
        f"server del {b}",
        f"server add {c}",
        f"server {c}",
        "server del 1",
        "server",
        home=tmp_path,
        cwd=tmp_path,
    )
    assert res.stdout.splitlines() == [
        f'Registered spp-ctl "{b}".',
        f'Unregistered spp-ctl "{b}".',
        f'Registered spp-ctl "{c}".',
        f'Switch spp-ctl to "2: {c}".',
        f'Unregistered spp-ctl "{a}".',
        f"  1: {c} *",
    ]
    assert res.stderr.splitlines() == ['Cannot del server "1" in use!']
