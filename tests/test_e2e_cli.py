"""The spp CLI driving real processes: spp-ctl, spp-primary and spp-nfv launched from the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spp.integrations.testbed import Testbed, wait_for


@pytest.fixture
def bed():
    with Testbed(nb_rings=2) as b:
        yield b


def spp(bed: Testbed, *commands: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}"]
    for c in commands:
        argv += ["-e", c]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)


def test_recipe_launches_patches_and_shows_traffic(bed, tmp_path):
    recipe = tmp_path / "chain.rcps"
    recipe.write_text(
        "# a null source through ring:0 into a sink, across two nfv\n"
        f"pri; launch nfv 1 -l 0,1 -- -n 1 -s 127.0.0.1:{bed.sec_port}\n"
        f"pri; launch nfv 2 -l 0,1 --master-lcore 1 -- -n 2 -s 127.0.0.1:{bed.sec_port}\n"
        "nfv 1; add nullpmd:0\n"
        "nfv 1; add ring:0\n"
        "nfv 1; patch nullpmd:0 ring:0\n"
        "nfv 2; add ring:0\n"
        "nfv 2; add nullpmd:1\n"
        "nfv 2; patch ring:0 nullpmd:1\n"
        "nfv 2; forward\n"
        "nfv 1; forward\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}", "-f", str(recipe)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for line in (
        "Send request to launch nfv:1.",
        "Add ring:0.",
        "Patch ports (nullpmd:0 -> ring:0).",
        "Start forwarding.",
    ):
        assert line in r.stdout
    wait_for(lambda: bed.ring_stats(0)["rx"] > 10_000, 10, "traffic through ring:0")

    r = spp(bed, "status", "nfv 1; status", "pri; status", "topo term")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "  - status: running" in out
    assert "    1: nfv:1" in out and "    2: nfv:2" in out
    assert "- status: running\n- lcore_ids:\n  - master: 0\n  - slave: 1\n- ports:\n" in out
    assert "  - nullpmd:0 -> ring:0\n" in out
    # The primary's ring counters, as SPP prints them: ring:0 has moved packets.
    ring_rows = out.split("  - ring ports:\n")[1].splitlines()
    assert ring_rows[0].split() == ["ID", "rx", "tx", "rx_drop", "tx_drop"]
    assert int(ring_rows[1].split()[1]) > 10_000
    assert "ring:0" in out.split("topo term")[-1] or "ring:0" in out


def test_bad_commands_are_one_line_errors_and_do_not_disturb_traffic(bed):
    nfv = bed.launch_nfv(1)
    nfv.add("nullpmd:0")
    nfv.add("ring:0")
    nfv.patch("nullpmd:0", "ring:0")
    nfv.add("nullpmd:1")
    nfv.patch("ring:0", "nullpmd:1")
    nfv.forward()
    before = bed.ring_stats(0)["rx"]
    for command, expected in [
        ("nfv 1; add foo:1", "foo:1"),
        ("nfv 1; add ring:7", "ring:7"),
        ("nfv 1; add ring:0", "already"),
        ("nfv 1; patch ring:1 ring:0", "ring:1"),
        ("nfv 5; status", '"nfv 5" does not exist.'),
        ("nfv 1; dance", "Invalid command"),
        ("nfv status", "Required an ID and ';' before the command."),
    ]:
        r = spp(bed, command)
        text = (r.stdout + r.stderr).strip()
        assert expected in text, (command, text)
        assert len(text.splitlines()) == 1, (command, text)
        assert "Traceback" not in text
        assert r.returncode == 1, (command, r.returncode)
    wait_for(lambda: bed.ring_stats(0)["rx"] > before + 100_000, 10, "traffic to keep flowing")
    assert nfv.status()["status"] == "running"


def test_tab_completion_for_a_real_vf(bed, tmp_path):
    """Completion asks the live process: free lcores, component names, its table's words."""
    from tests.cli_doubles import PtyCli

    vf = bed.launch_vf(3)
    vf.start("cls", 1, "classifier")
    cli = PtyCli(f"127.0.0.1:{bed.api_port}", tmp_path)
    try:
        cli.expect("spp > ")
        cli.send("vf 3; comp\t")
        cli.expect("vf 3; component ")
        cli.send("stop \t")
        cli.expect("stop cls ")  # the one running component
        cli.send("\x15")
        cli.send("vf 3; port add ring:0 r\t")
        cli.expect("rx ")
        cli.send("c\t")
        cli.expect("cls ")
        cli.send("\n")
        cli.expect("Succeeded to add port")
        cli.send("vf 3; classifier_table add m\t")
        cli.expect("mac ")
        cli.send("\x15")
    finally:
        cli.close()
    assert vf.component("cls")["rx_port"][0]["port"] == "ring:0"
