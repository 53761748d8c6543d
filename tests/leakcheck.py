"""Session check: the test run leaves nothing behind.

At the start of the session it notes what exists; at the end, anything new that this run made
fails the run: log and testbed directories under /tmp, shared segments in /dev/shm, network
namespaces, network interfaces, processes.

Other test runs may share the machine (several checkouts on one host), so an object counts as
this run's when its name carries the run's token, ``<pid of pytest>x`` (testbed prefixes
``bed<pid>x...``, test segments ``pyt...<pid>x...``, namespaces and veths ``sppt<pid>x...``),
or, for processes, when they descend from this pytest or name the token on their command line.
With ``SPP_LEAK_CHECK=all``, for a machine where nothing else runs, every new object matching
the project's name patterns counts, whoever made it.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

RUN_TOKEN = f"{os.getpid() % 100000}x"  # as spp.integrations.testbed names its prefixes
_TOKEN_RE = re.compile(rf"(?<!\d){re.escape(RUN_TOKEN)}")

# The names the project gives to what it creates (spp/instance.py, testbed, demo, tests/netutil.py).
_DIR_RE = re.compile(r"spp-")  # spp-log-P, spp-testbed-P, spp-P (an instance's VMs)
_SEGMENT_RE = re.compile(r"spp_.*\.seg")
_NETNS_RE = re.compile(r"spp")
_LINK_RE = re.compile(r"(spt|sd[0-9a-f]{6}[ab]|vtap\d|vt[0-9a-f]{8}-)|-tap\d+$")
_PROC_RE = re.compile(r"(-m spp\.|/spp-(ctl|primary|nfv|vf|mirror|pcap|demo)( |$)|spp/demo\.py)")

GRACE_SECONDS = float(os.environ.get("SPP_LEAK_GRACE", "10"))


def run_token() -> str:
    """What names made by this run carry (see the module docstring)."""
    return RUN_TOKEN


_short_tags = itertools.count()


def short_tag() -> str:
    """The run token plus two hex digits, different on every call of this run.

    For names with little room (a multi-host bed's tag ends up inside 15-character interface
    names). A random suffix that short collided once in a full run; a counter cannot.
    """
    return f"{RUN_TOKEN}{next(_short_tags) % 256:02x}"


@dataclass(frozen=True)
class Proc:
    pid: int
    cmdline: str

    def __str__(self) -> str:
        return f"pid {self.pid}: {self.cmdline[:160]}"


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, state, command line) of every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), fields[0], cmdline.strip())
    return table


def _descendants(table: dict[int, tuple[int, str, str]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _names(argv: list[str]) -> set[str]:
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    return {line.split()[0].split("@")[0].rstrip(":") for line in r.stdout.splitlines() if line.strip()}


def snapshot(strict: bool) -> set[str]:
    """Everything of interest that exists now, as ``"kind name"`` strings."""
    mine = (lambda _name: True) if strict else (lambda name: bool(_TOKEN_RE.search(name)))
    found: set[str] = set()
    for path in Path("/tmp").glob("spp*"):
        if _DIR_RE.match(path.name) and path.is_dir() and mine(path.name):
            found.add(f"directory {path}")
    for path in Path("/dev/shm").glob("spp_*"):
        if _SEGMENT_RE.fullmatch(path.name) and mine(path.name):
            found.add(f"segment {path}")
    if Path("/run/netns").is_dir():
        for name in _names(["ip", "netns", "list"]):
            if _NETNS_RE.match(name) and mine(name):
                found.add(f"namespace {name}")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    for line in links.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        if _LINK_RE.search(name) and mine(name):
            found.add(f"interface {name}")
    table = _processes()
    own = _descendants(table, os.getpid())
    for pid, (_ppid, state, cmdline) in table.items():
        if state == "Z" or pid == os.getpid():
            continue
        if pid in own or (_PROC_RE.search(cmdline) and (strict or _TOKEN_RE.search(cmdline))):
            found.add(f"process {Proc(pid, cmdline)}")
    return found


def _strict() -> bool:
    return os.environ.get("SPP_LEAK_CHECK", "") == "all"


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = snapshot(_strict())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_BEFORE, None)
    if before is None:
        return
    deadline = time.monotonic() + GRACE_SECONDS
    while True:  # processes being stopped and links going with them need a moment
        left = sorted(snapshot(_strict()) - before)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["", "the test run left these behind (tests must remove what they create):"]
    lines += [f"  {item}" for item in left]
    if reporter is not None:
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


_BEFORE = pytest.StashKey[set[str]]()
