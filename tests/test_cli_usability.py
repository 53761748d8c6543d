"""The CLI as people use it, against live processes: pipes closed early, completion of every port
form, messages that read as sentences, help texts without internal references."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from spp.control.cli.client import SppCtlClient
from spp.control.cli.help_msg import HELP
from spp.control.cli.session import Session
from spp.control.cli.shell import Shell
from spp.integrations.testbed import Testbed, free_port

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
CONSOLE_SCRIPTS = sorted(tomllib.loads(PYPROJECT.read_text())["project"]["scripts"])
#: What must not reach users: spec sections, document names, notes about the rewrite itself.
INTERNAL_REFERENCE = re.compile(r"§|\bspec\b|spp-api|\.md\b|\bseed|\bissue \d", re.IGNORECASE)


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    with Testbed(nb_rings=4, primary_lcores="0,1") as b:
        nfv = b.launch_nfv(1)
        nfv.add("ring:0")
        vf = b.launch_vf(2)
        vf.start("fw", 1, "forward")
        vf.attach("ring:1", "rx", "fw")
        b.launch_mirror(3)
        b.mirror(3).start("mir", 1, "mirror")
        yield b


def spp(bed: Testbed, *commands: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}"]
    for c in commands:
        argv += ["-e", c]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def run_with_closed_stdout(argv: list[str], timeout: float = 120) -> tuple[int, str]:
    """Start ``argv`` with stdout a pipe whose reader is already gone (``| head`` having exited)."""
    # Buffered stdout, as on a user's machine: with PYTHONUNBUFFERED every print would meet the
    # closed pipe at once, and output that fits in the buffer would never be tested.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode(errors="replace")
    return proc.wait(timeout), err


# -- pipes -------------------------------------------------------------------------------------


def test_spp_output_into_a_closed_pipe_ends_quietly(bed: Testbed) -> None:
    argv = [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}"]
    argv += ["-e", "status", "-e", "pri; status", "-e", "nfv 1; status", "-e", "help"]
    rc, err = run_with_closed_stdout(argv)
    assert err == ""
    assert rc == 141  # as a C tool killed by SIGPIPE: `set -o pipefail` scripts can tell


def test_spp_into_head_shows_the_first_line_only(bed: Testbed) -> None:
    spp_cmd = f"{sys.executable} -m spp.control.cli.main -b 127.0.0.1:{bed.api_port}"
    # Enough output that spp is still writing when head has gone.
    script = f"{spp_cmd} " + " ".join(["-e 'pri; status' -e help"] * 200) + " | head -1"
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert r.stdout == "- lcore_ids:\n"
    assert r.stderr == ""


def test_demo_into_a_closed_pipe_ends_quietly_and_tears_down() -> None:
    api_port = free_port()
    argv = [sys.executable, "-m", "spp.demo", "--no-netns", "--seconds", "1", "--api-port", str(api_port)]
    rc, err = run_with_closed_stdout(argv)
    assert err == ""
    assert rc == 141
    with socket.socket() as s:  # spp-ctl was stopped on the way out
        assert s.connect_ex(("127.0.0.1", api_port)) != 0


def test_demo_output_has_no_python_reprs() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "spp.demo", "--no-netns", "--seconds", "1", "--api-port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "processes: primary, nfv 1, nfv 2" in r.stdout
    assert "phy ports: none" in r.stdout
    for repr_mark in ("{'", "['", "None", "True", "False"):
        assert repr_mark not in r.stdout, (repr_mark, r.stdout)


# -- completion --------------------------------------------------------------------------------


@pytest.fixture
def shell(bed: Testbed) -> Iterator[Shell]:
    session = Session([SppCtlClient("127.0.0.1", bed.api_port)])
    yield Shell(session)
    session.close()


def complete(shell: Shell, line: str) -> list[str]:
    """What TAB offers at the end of ``line`` (readline's split: spaces and ';' only)."""
    text = re.split(r"[ ;]", line)[-1]
    begidx = len(line) - len(text)
    return shell.completenames(text) if " " not in line else _complete_cmd(shell, line, text, begidx)


def _complete_cmd(shell: Shell, line: str, text: str, begidx: int) -> list[str]:
    cmd = re.split(r"[ ;]", line)[0]
    return getattr(shell, f"complete_{cmd}")(text, line, begidx, len(line))


def test_completion_offers_every_port_type_each_process_opens(shell: Shell) -> None:
    every = ["ring:", "vhost:", "pcap:", "nullpmd:", "tap:"]
    assert complete(shell, "nfv 1; add ") == every
    assert complete(shell, "nfv 1; add t") == ["tap:"]
    assert complete(shell, "pri; add ") == [*every, "pipe:"]
    assert complete(shell, "pri; add ta") == ["tap:"]
    for sec in ("vf 2", "mirror 3"):
        assert complete(shell, f"{sec}; port add ") == ["phy:", "ring:", "vhost:"]
        assert complete(shell, f"{sec}; port add phy:0 ") == ["rx", "tx", "nq"]
        assert complete(shell, f"{sec}; port add ring:0 ") == ["rx", "tx"]
        assert complete(shell, f"{sec}; port add phy:0 nq ") == []
        assert complete(shell, f"{sec}; port add phy:0 nq 1 ") == ["rx", "tx"]
    assert complete(shell, "vf 2; port add phy:0 nq 1 rx ") == ["fw"]
    assert complete(shell, "mirror 3; port add ring:2 tx ") == ["mir"]
    assert complete(shell, "vf 2; port add ring:0 rx fw ") == ["add_vlantag", "del_vlantag"]
    assert complete(shell, "mirror 3; port add ring:0 rx mir ") == []
    assert complete(shell, "vf 2; port del ") == ["ring:1", "phy:", "ring:", "vhost:"]
    assert complete(shell, "vf 2; classifier_table add mac default ") == ["phy:", "ring:", "vhost:"]


def test_tap_completes_on_a_terminal(bed: Testbed, tmp_path: Path) -> None:
    from tests.cli_doubles import PtyCli

    cli = PtyCli(f"127.0.0.1:{bed.api_port}", tmp_path)
    try:
        cli.expect("spp > ")
        cli.send("nfv 1; add ta\t")
        cli.expect("nfv 1; add tap:")
    finally:
        cli.close()


# -- messages ----------------------------------------------------------------------------------


def test_errors_read_as_sentences_in_the_users_port_names(bed: Testbed) -> None:
    for command, expected in [
        ("nfv 1; patch phy:0 nq 1 ring:0", "phy:0 nq 1"),
        ("nfv 1; patch ring:0 nq 1 ring:1", "Only phy ports have queues: 'ring:0 nq 1' is not a port."),
        ("vf 2; component stop nope", "No component 'nope' in vf 2 (components: fw)."),
        ("mirror 3; component stop nope", "No component 'nope' in mirror 3 (components: mir)."),
        ("pri", "Required ';' after 'pri', e.g. 'pri; status' (got 'pri')."),
        ("redo 1", "The history is empty: there is nothing to redo."),
    ]:
        r = spp(bed, command)
        assert r.returncode == 1, (command, r.stdout)
        text = r.stderr.strip()
        assert expected in text, (command, text)
        assert "nq1" not in text and "Traceback" not in text, (command, text)
    assert bed.mirror(3).component("mir")  # the refused stop touched nothing


# -- help texts --------------------------------------------------------------------------------


@pytest.mark.parametrize("script", CONSOLE_SCRIPTS)
def test_console_help_has_no_internal_references(script: str) -> None:
    exe = Path(sys.executable).with_name(script)
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert not INTERNAL_REFERENCE.search(r.stdout), r.stdout


def test_cli_help_has_no_internal_references(bed: Testbed) -> None:
    shell = Shell(Session([SppCtlClient("127.0.0.1", bed.api_port)]))
    topics = sorted({n[3:] for n in shell.get_names() if n.startswith("do_")} | set(HELP))
    r = spp(bed, "help", *(f"help {t}" for t in topics))
    assert r.returncode == 0, r.stderr
    assert not INTERNAL_REFERENCE.search(r.stdout), INTERNAL_REFERENCE.search(r.stdout)


def test_pktgen_live_lines_into_a_closed_pipe_end_quietly() -> None:
    exe = Path(sys.executable).with_name("spp-pktgen")
    rc, err = run_with_closed_stdout([str(exe), "--tx", "nullpmd:0", "--duration", "5", "--interval", "0.2"])
    assert "Traceback" not in err and "Error" not in err, err
    assert rc == 141


def test_l2fwd_counters_into_a_closed_pipe_end_quietly() -> None:
    exe = Path(sys.executable).with_name("spp-l2fwd")
    proc = subprocess.Popen(
        [str(exe), "nullpmd:0", "nullpmd:1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    try:
        assert b"forwarding" in proc.stderr.readline()
        proc.send_signal(signal.SIGUSR1)  # print the counters now: into the closed pipe
        assert proc.wait(30) == 141
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert b"Traceback" not in proc.stderr.read()
