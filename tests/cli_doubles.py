"""Test helpers for the CLI: a scripted spp-ctl over real HTTP, and the CLI run as a subprocess.

* :class:`FakeCtl` -- an aiohttp server on 127.0.0.1 answering ``/v1/...`` from a table of
  canned replies (taken from spp-api.md §3) and recording every request, so a test can assert
  both what the CLI printed and the exact REST calls it made, including error replies that a
  real spp-ctl would be hard to provoke.
* :func:`run_cli` -- ``python -m spp.control.cli.main`` in batch mode.
* :class:`PtyCli` -- the interactive CLI on a pseudo-terminal, for completion and history.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["ROOT", "FakeCtl", "PtyCli", "cli_env", "default_routes", "run_cli"]

ROOT = Path(__file__).resolve().parents[1]
"""Repository root (holds the ``spp`` package), put on PYTHONPATH of the CLI subprocess."""

PRIMARY_STATUS: dict[str, Any] = {
    "master-lcore": 0,
    "lcores": [0, 1],
    "forwarder": {
        "status": "idling",
        "ports": ["phy:0", "phy:1", "ring:0"],
        "patches": [{"src": "phy:0", "dst": "ring:0"}],
    },
    "phy_ports": [
        {"id": 0, "eth": "56:48:4f:53:54:00", "rx": 0, "tx": 0, "tx_drop": 0,
         "nof_queues": {"rx": 1, "tx": 1}, "flow": []},
        {"id": 1, "eth": "56:48:4f:53:54:01", "rx": 123456, "tx": 7890, "tx_drop": 12,
         "nof_queues": {"rx": 2, "tx": 2}, "flow": []},
    ],
    "ring_ports": [
        {"id": 0, "rx": 0, "rx_drop": 0, "tx": 0, "tx_drop": 0},
        {"id": 1, "rx": 5, "rx_drop": 0, "tx": 5, "tx_drop": 1},
    ],
    "pipes": [{"id": 0, "rx": 0, "tx": 1}],
}  # fmt: skip

NFV_STATUS: dict[str, Any] = {
    "client-id": 1,
    "status": "running",
    "master-lcore": 1,
    "lcores": [1, 2],
    "ports": ["phy:0", "phy:1", "ring:0", "vhost:1"],
    "patches": [{"src": "phy:0", "dst": "ring:0"}, {"src": "ring:0", "dst": "vhost:1"}],
}

_VLAN_NONE = {"operation": "none", "id": 0, "pcp": 0}

VF_STATUS: dict[str, Any] = {
    "client-id": 2,
    "ports": ["phy:1", "ring:1", "ring:2"],
    "master-lcore": 1,
    "components": [
        {"core": 2, "name": "fwd1", "type": "forward",
         "rx_port": [{"port": "phy:1", "vlan": {"operation": "add", "id": 101, "pcp": 3}}],
         "tx_port": [{"port": "ring:1", "vlan": _VLAN_NONE}]},
        {"core": 3, "name": "cls1", "type": "classifier",
         "rx_port": [{"port": "ring:1", "vlan": {"operation": "del", "id": 0, "pcp": 0}}],
         "tx_port": [{"port": "ring:2", "vlan": _VLAN_NONE}, {"port": "ring:3", "vlan": _VLAN_NONE}]},
        {"core": 4, "type": "unuse"},
    ],
    "classifier_table": [{"type": "mac", "value": "FA:16:3E:7D:CC:35", "port": "ring:2"}],
}  # fmt: skip

MIRROR_STATUS: dict[str, Any] = {
    "client-id": 3,
    "ports": ["ring:0", "ring:4", "ring:5"],
    "master-lcore": 1,
    "components": [
        {"core": 2, "name": "mr1", "type": "mirror",
         "rx_port": [{"port": "ring:0", "vlan": _VLAN_NONE}],
         "tx_port": [{"port": "ring:4", "vlan": _VLAN_NONE}, {"port": "ring:5", "vlan": _VLAN_NONE}]},
        {"core": 3, "type": "unuse"},
    ],
}  # fmt: skip

PCAP_STATUS: dict[str, Any] = {
    "client-id": 4,
    "status": "running",
    "master-lcore": 1,
    "core": [
        {"core": 2, "role": "receive", "rx_port": [{"port": "phy:0"}]},
        {"core": 3, "role": "write", "filename": "/tmp/spp_pcap.20181108110600.phy0.1.1.pcap.lz4"},
    ],
}

PROCESSES = [
    {"type": "primary"},
    {"type": "nfv", "client-id": 1},
    {"type": "vf", "client-id": 2},
    {"type": "mirror", "client-id": 3},
    {"type": "pcap", "client-id": 4},
]

CPU_LAYOUT = [{"socket_id": 0, "cores": [{"core_id": i, "lcores": [i]} for i in range(8)]}]
CPU_USAGE = [
    {"proc-type": "primary", "master-lcore": 0, "lcores": [0, 1]},
    {"proc-type": "nfv", "client-id": 1, "master-lcore": 2, "lcores": [2, 3]},
]

Reply = tuple[int, Any]


def default_routes() -> dict[tuple[str, str], Reply]:
    """(METHOD, /v1/path) -> (status, body): a primary with a forwarder, nfv 1, vf 2, mirror 3, pcap 4."""
    r: dict[tuple[str, str], Reply] = {
        ("GET", "/v1/processes"): (200, PROCESSES),
        ("GET", "/v1/cpu_layout"): (200, CPU_LAYOUT),
        ("GET", "/v1/cpu_usage"): (200, CPU_USAGE),
        ("GET", "/v1/primary/status"): (200, PRIMARY_STATUS),
        ("DELETE", "/v1/primary/status"): (204, None),
        ("PUT", "/v1/primary/forward"): (204, None),
        ("PUT", "/v1/primary/ports"): (204, None),
        ("PUT", "/v1/primary/patches"): (204, None),
        ("DELETE", "/v1/primary/patches"): (204, None),
        ("PUT", "/v1/primary/launch"): (204, None),
        ("DELETE", "/v1/primary"): (204, None),
        ("GET", "/v1/nfvs/1"): (200, NFV_STATUS),
        ("DELETE", "/v1/nfvs/1"): (204, None),
        ("PUT", "/v1/nfvs/1/forward"): (204, None),
        ("PUT", "/v1/nfvs/1/ports"): (204, None),
        ("PUT", "/v1/nfvs/1/patches"): (204, None),
        ("DELETE", "/v1/nfvs/1/patches"): (204, None),
        ("GET", "/v1/vfs/2"): (200, VF_STATUS),
        ("DELETE", "/v1/vfs/2"): (204, None),
        ("POST", "/v1/vfs/2/components"): (204, None),
        ("DELETE", "/v1/vfs/2/components/fwd1"): (204, None),
        ("PUT", "/v1/vfs/2/components/fwd1/ports"): (204, None),
        ("PUT", "/v1/vfs/2/classifier_table"): (204, None),
        ("GET", "/v1/mirrors/3"): (200, MIRROR_STATUS),
        ("DELETE", "/v1/mirrors/3"): (204, None),
        ("POST", "/v1/mirrors/3/components"): (204, None),
        ("DELETE", "/v1/mirrors/3/components/mr1"): (204, None),
        ("PUT", "/v1/mirrors/3/components/mr1/ports"): (204, None),
        ("GET", "/v1/pcaps/4"): (200, PCAP_STATUS),
        ("DELETE", "/v1/pcaps/4"): (204, None),
        ("PUT", "/v1/pcaps/4/capture"): (204, None),
    }
    return copy.deepcopy(r)


class FakeCtl:
    """A scripted spp-ctl on a real TCP port (aiohttp in a background thread)."""

    def __init__(self) -> None:
        self.routes = default_routes()
        self.requests: list[tuple[str, str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = 0
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="fake-spp-ctl", daemon=True)
        self._thread.start()
        if not started.wait(10) or not self.port:
            raise RuntimeError("fake spp-ctl did not start")

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.requests.append((request.method, request.path, body))
        reply = self.routes.get((request.method, request.path))
        if reply is None:
            return web.Response(
                status=404, text=f"Not found: '{request.path[3:]}'", content_type="text/plain"
            )
        status, payload = reply
        if isinstance(payload, (int, float)) and status == 0:  # (0, secs): hang, to test time-outs
            await asyncio.sleep(payload)
            return web.Response(status=204)
        if status == 204:
            return web.Response(status=204)
        if isinstance(payload, str):
            return web.Response(status=status, text=payload, content_type="text/plain")
        return web.json_response(payload, status=status)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.routes = default_routes()
        self.requests.clear()

    def calls(self, *, skip_get: bool = False) -> list[tuple[str, str, Any]]:
        """Requests so far; ``skip_get`` leaves out the GETs (status look-ups) to show the actions."""
        return [r for r in self.requests if not (skip_get and r[0] == "GET")]

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def cli_env(home: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Environment for a CLI subprocess: the repo on PYTHONPATH, a private HOME for the history."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if home is not None:
        env["HOME"] = str(home)
    env.pop("SPP_FILE_PREFIX", None)
    return env


def run_cli(
    addr: str | None,
    *commands: str,
    args: tuple[str, ...] = (),
    stdin: str | None = None,
    home: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """``spp -b ADDR -e CMD ...`` (batch mode); stdin defaults to /dev/null (not a tty)."""
    argv = [sys.executable, "-m", "spp.control.cli.main"]
    if addr:
        argv += ["-b", addr]
    for c in commands:
        argv += ["-e", c]
    argv += list(args)
    return subprocess.run(
        argv,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=cli_env(home),
        cwd=cwd or ROOT,
        timeout=timeout,
        check=False,
    )


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")


class PtyCli:
    """The interactive CLI on a pseudo-terminal: type keys, read the screen text."""

    def __init__(self, addr: str, home: str | os.PathLike[str], *args: str) -> None:
        self.master, slave = os.openpty()
        inputrc = Path(home) / ".inputrc"
        inputrc.write_text("set enable-bracketed-paste off\nset bell-style none\n")
        env = cli_env(home)
        env.update(TERM="dumb", INPUTRC=str(inputrc), COLUMNS="200", LINES="50")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spp.control.cli.main", "-b", addr, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=ROOT,
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        self.buffer = ""

    def send(self, data: str) -> None:
        os.write(self.master, data.encode())

    def _read(self, timeout: float) -> bool:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            return False
        if not chunk:
            return False
        self.buffer += _ANSI.sub("", chunk.decode(errors="replace"))
        return True

    def expect(self, text: str | re.Pattern[str], timeout: float = 10.0) -> str:
        """Wait until ``text`` appears after the last match; return everything up to its end."""
        deadline = time.monotonic() + timeout
        pat = re.compile(re.escape(text)) if isinstance(text, str) else text
        while True:
            m = pat.search(self.buffer)
            if m:
                seen, self.buffer = self.buffer[: m.end()], self.buffer[m.end() :]
                return seen
            left = deadline - time.monotonic()
            exhausted = left <= 0 or (not self._read(min(left, 0.2)) and self.proc.poll() is not None)
            if exhausted and not pat.search(self.buffer):
                raise AssertionError(f"did not see {pat.pattern!r}; screen so far:\n{self.buffer}")

    def close(self) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send("exit\n")
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(OSError):
            os.close(self.master)
        return self.proc.returncode
