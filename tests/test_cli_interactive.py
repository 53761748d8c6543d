"""The interactive shell on a pseudo-terminal: banner, prompt, TAB completion, history, Ctrl-D."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_doubles import FakeCtl, PtyCli

BANNER = "Welcome to the SPP CLI. Type `help` or `?` to list commands."
PROMPT = "spp > "


@pytest.fixture
def ctl() -> Iterator[FakeCtl]:
    s = FakeCtl()
    yield s
    s.close()


@pytest.fixture
def shell(ctl: FakeCtl, tmp_path: Path) -> Iterator[PtyCli]:
    cli = PtyCli(ctl.addr, tmp_path)
    yield cli
    cli.close()


def test_completion_and_history(shell: PtyCli, ctl: FakeCtl, tmp_path: Path) -> None:
    shell.expect(BANNER)
    shell.expect(PROMPT)

    # command names
    shell.send("sta\t")
    shell.expect("status ")
    shell.send("\n")
    shell.expect("    4: pcap:4")
    shell.expect(PROMPT)

    # secondary IDs, then sub-commands after ';'
    shell.send("nfv \t")
    shell.expect("nfv 1;")
    shell.send("sta\t")
    shell.expect("status ")
    shell.send("\n")
    shell.expect("  - ring:0 -> vhost:1")
    shell.expect(PROMPT)
    shell.send("nfv 1; patch ph\t")  # phy:0 and phy:1 both match: nothing inserted yet
    shell.send("1 ri\t")
    shell.expect("nfv 1; patch phy:1 ring:0 ")
    shell.send("\x15")  # Ctrl-U: drop the line

    # the launch template of §7.3, filled from cpu_layout/cpu_usage and the config
    shell.send("pri; launch nfv 5 \t")
    shell.expect("pri; launch nfv 5 -l 2,4 -m 512 -- -n 5 -s 127.0.0.1:6666")
    shell.send("\x15")

    shell.send("nfv 1; forward\n")
    shell.expect("Start forwarding.")
    shell.expect(PROMPT)

    # history: Ctrl-P recalls the last command; `history` lists, leaving itself out
    shell.send("\x10")
    shell.expect("nfv 1; forward")
    shell.send("\n")
    shell.expect("Start forwarding.")
    shell.expect(PROMPT)
    shell.send("nfv 9; status\n")
    shell.expect('"nfv 9" does not exist.')
    shell.expect(PROMPT)
    shell.send("history\n")
    listing = shell.expect(PROMPT)
    assert "  1  status \n" in listing.replace("\r", "")
    # readline does not store a line equal to the one before it (the recalled forward)
    for line in ["  2  nfv 1; status ", "  3  nfv 1; forward", "  4  nfv 9; status"]:
        assert line in listing
    assert "history" not in listing.split("nfv 9; status", 1)[1]

    shell.send("bye\n")
    shell.expect("Thank you for using Soft Patch Panel")
    assert shell.close() == 0

    saved = (tmp_path / ".spp_history").read_text().splitlines()
    assert saved == ["status ", "nfv 1; status ", "nfv 1; forward", "nfv 9; status"]
    forwards = [c for c in ctl.calls(skip_get=True) if c[1] == "/v1/nfvs/1/forward"]
    assert forwards == [("PUT", "/v1/nfvs/1/forward", {"action": "start"})] * 2


def test_history_persists_and_ctrl_d(ctl: FakeCtl, tmp_path: Path) -> None:
    (tmp_path / ".spp_history").write_text("nfv 1; stop\n")
    cli = PtyCli(ctl.addr, tmp_path)
    try:
        cli.expect(PROMPT)
        cli.send("\x10")
        cli.expect("nfv 1; stop")
        cli.send("\n")
        cli.expect("Stop forwarding.")
        cli.expect(PROMPT)
        cli.send("# a comment\n")
        cli.expect("# a comment")
        cli.expect(PROMPT)
        cli.send("\x04")  # Ctrl-D
        cli.expect("Thank you for using Soft Patch Panel")
        assert cli.proc.wait(10) == 0
    finally:
        cli.close()
    assert (tmp_path / ".spp_history").read_text().splitlines() == ["nfv 1; stop", "# a comment"]
