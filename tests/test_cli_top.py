"""``spp top`` and the shell's ``top`` against live processes with traffic flowing: the rates
move while the nfvs forward and fall to zero once they stop, in a pipe and on a terminal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from spp.integrations.testbed import Testbed, wait_for
from tests.cli_doubles import PtyCli

SVG = "{http://www.w3.org/2000/svg}"

SUFFIX = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}
HEADER = ["PROCESS", "PORT", "rx pps", "tx pps", "drop pps", "rx bit/s", "tx bit/s"]


@pytest.fixture
def bed() -> Iterator[Testbed]:
    """nullpmd:0 -> ring:0 (nfv 1), ring:0 -> nullpmd:1 (nfv 2): packets move without root."""
    with Testbed(nb_rings=2) as b:
        nfv1 = b.launch_nfv(1)
        nfv2 = b.launch_nfv(2, main_lcore=1)
        nfv1.add("nullpmd:0")
        nfv1.add("ring:0")
        nfv1.patch("nullpmd:0", "ring:0")
        nfv2.add("ring:0")
        nfv2.add("nullpmd:1")
        nfv2.patch("ring:0", "nullpmd:1")
        nfv2.forward()
        nfv1.forward()
        wait_for(lambda: b.ring_stats(0)["rx"] > 1000, 15, "traffic through ring:0")
        yield b


def value(cell: str) -> float:
    m = re.fullmatch(r"([0-9.]+)([kMG]?)", cell)
    assert m, f"not a rate: {cell!r}"
    return float(m[1]) * SUFFIX[m[2]]


def tables(text: str) -> list[dict[tuple[str, str], list[str]]]:
    """Each table of top's output as {(process, port): [rx pps, tx pps, drop pps, rx bit/s, tx bit/s]}."""
    out = []
    for chunk in text.split("spp top - ")[1:]:
        lines = chunk.splitlines()
        assert re.split(r"\s{2,}", lines[1].strip()) == HEADER, lines[1]
        rows = {}
        for line in lines[2:]:
            if not line.strip() or line.startswith("n/a:"):
                continue
            cells = re.split(r"\s{2,}", line.strip())
            assert len(cells) == 7, line
            rows[(cells[0], cells[1])] = cells[2:]
        out.append(rows)
    return out


def spp_top(bed: Testbed, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}", "top", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def stop_traffic(bed: Testbed) -> None:
    bed.nfv(1).stop()
    bed.nfv(2).stop()
    # Bursts already in flight drain within a moment; wait until the ring's counters stand still.
    last: list[int] = []

    def still() -> bool:
        now = bed.ring_stats(0)["rx"]
        last.append(now)
        return len(last) > 2 and last[-1] == last[-3]

    wait_for(still, 10, "ring:0 to stand still", interval=0.2)


def test_top_in_a_pipe_shows_rates_then_zero_after_stop(bed: Testbed) -> None:
    r = spp_top(bed, "-n", "2", "-i", "0.5")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "\x1b[" not in r.stdout  # no screen control in a pipe
    shown = tables(r.stdout)
    assert len(shown) == 2
    for t in shown:
        assert value(t[("nfv 1", "nullpmd:0")][0]) > 0  # the source produces
        assert value(t[("nfv 1", "ring:0")][1]) > 0  # into the ring
        assert value(t[("nfv 2", "ring:0")][0]) > 0  # the other nfv takes them out
        assert value(t[("nfv 2", "nullpmd:1")][1]) > 0  # into the sink
        assert value(t[("primary", "ring:0")][0]) > 0
        # Ports count bytes: the null source makes 64-byte frames, so bit/s is 512 x pps.
        tx_pps, tx_bps = value(t[("nfv 1", "ring:0")][1]), value(t[("nfv 1", "ring:0")][4])
        assert tx_bps == pytest.approx(512 * tx_pps, rel=0.05)
        assert value(t[("primary", "ring:0")][3]) > 0
    assert "n/a:" not in r.stdout  # no row without bytes here (no vf/mirror components)

    stop_traffic(bed)
    r = spp_top(bed, "--once", "-i", "0.5")
    assert r.returncode == 0, r.stderr
    (t,) = tables(r.stdout)
    for key in (("nfv 1", "nullpmd:0"), ("nfv 1", "ring:0"), ("nfv 2", "ring:0"), ("primary", "ring:0")):
        assert t[key][:3] == ["0", "0", "0"], (key, t[key])


def test_top_inside_the_cli_batch_mode(bed: Testbed) -> None:
    argv = [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}"]
    r = subprocess.run(
        [*argv, "-e", "top --once -i 0.5", "-e", "help status", "-e", "help top"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    (t,) = tables(r.stdout.split("Display status info")[0])
    assert value(t[("nfv 2", "nullpmd:1")][1]) > 0
    # Every counter is explained, tx_drop included, in both help texts.
    for name in ("rx ", "tx ", "rx_drop", "tx_drop", "drop ", "pps", "bit/s"):
        assert r.stdout.count(f"  {name}") >= 2 or r.stdout.count(name) >= 2, name
    assert "could not send" in r.stdout


def test_top_refuses_bad_options(bed: Testbed) -> None:
    r = spp_top(bed, "-n", "0")
    assert r.returncode == 2 and "COUNT must be 1 or more" in r.stderr
    r = spp_top(bed, "--interval", "0")
    assert r.returncode == 2 and "interval must be at least 0.1 s" in r.stderr
    argv = [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}"]
    r = subprocess.run([*argv, "-e", "top --bogus"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "top: unrecognized arguments: --bogus. Usage: top [-h]" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([*argv, "-e", "top -h", "-e", "status"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage: top [-h] [-i SECS] [-n COUNT] [--once]" in r.stdout
    assert "- spp-ctl:" in r.stdout  # the shell went on after the help


def test_top_into_a_closed_pipe_ends_quietly(bed: Testbed) -> None:
    argv = [
        sys.executable,
        "-m",
        "spp.control.cli.main",
        "-b",
        f"127.0.0.1:{bed.api_port}",
        "top",
        "-i",
        "0.2",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    assert proc.stderr.read() == b""
    assert proc.wait(30) == 141


def test_spp_top_on_a_terminal_refreshes_until_interrupted(bed: Testbed, tmp_path: Path) -> None:
    cli = PtyCli(f"127.0.0.1:{bed.api_port}", tmp_path, "top", "-i", "0.3")
    row = re.compile(r"nfv 2 +nullpmd:1 +(\S+) +(\S+) +(\S+) ")
    try:
        seen = cli.expect(row)
        assert "(Ctrl-C to stop)" in seen
        assert value(list(row.finditer(seen))[-1][2]) > 0  # packets into the sink
        cli.expect("spp top - ")  # it refreshes
        stop_traffic(bed)
        cli.expect(re.compile(r"nfv 2 +nullpmd:1 +0 +0 +0 "), timeout=15)
        os.kill(cli.proc.pid, signal.SIGINT)  # what Ctrl-C sends
        assert cli.proc.wait(10) == 0
        assert "Traceback" not in cli.buffer
    finally:
        cli.close()


def test_top_command_on_a_terminal_returns_to_the_prompt(bed: Testbed, tmp_path: Path) -> None:
    cli = PtyCli(f"127.0.0.1:{bed.api_port}", tmp_path)
    try:
        cli.expect("spp > ")
        cli.send("top -i 0.3\n")
        seen = cli.expect(re.compile(r"nfv 1 +nullpmd:0 +([0-9.]+[kMG]?) "))
        assert re.search(r"nfv 1 +nullpmd:0 +[1-9]", seen), seen
        cli.expect("spp top - ")  # a second table: it refreshes
        os.kill(cli.proc.pid, signal.SIGINT)
        cli.expect("spp > ")
        cli.send("nfv 1; stop\n")
        cli.expect("Stop forwarding.")
        assert "Interrupted." not in cli.buffer
    finally:
        cli.close()


def test_top_plots_the_rates_when_it_ends(bed: Testbed, tmp_path: Path) -> None:
    plot = tmp_path / "rates.svg"
    r = spp_top(bed, "-n", "3", "-i", "0.3", "--plot", str(plot))
    assert r.returncode == 0, r.stderr
    assert f"Rates plotted to '{plot}'." in r.stdout
    root = ET.fromstring(plot.read_text())
    lines = {t.text for t in root.iter(f"{SVG}title")}
    assert {"nfv 1 nullpmd:0 rx", "nfv 2 nullpmd:1 tx"} <= lines, lines
    for line in root.iter(f"{SVG}polyline"):
        assert len((line.get("points") or "").split()) == 3  # one point per table
    r = spp_top(bed, "--once", "--plot", str(tmp_path / "rates.txt"))
    assert r.returncode == 2 and "must end in .svg or .png" in r.stderr
