"""Test helpers: SPP processes faked on the wire, and spp-ctl run as a real subprocess.

:class:`FakeProcess` behaves like SPP's C processes as recorded in spp-wire-captures.md: it
connects to spp-ctl (processes are TCP clients), takes one ``recv`` as one command, and answers:

* primary / nfv: compact JSON NUL-padded to exactly 32768 bytes, optionally split over several
  sends; ``patch reset`` answered with the strtok-mangled echo ``patch\\0reset`` + padding;
* vf / mirror / pcap: SPP's worker formatter style, unpadded
  (``{ "results": [ { "result": "success" } ] }``).

Every command received is recorded in :attr:`FakeProcess.commands`, so a test can assert the exact
string spp-ctl sent for a REST call. Threads, not asyncio, so plain synchronous tests can use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

MSG_SIZE = 32768
ROOT = Path(__file__).resolve().parents[1]
"""Repository root (holds the ``spp`` package), put on PYTHONPATH of the spp-ctl subprocess."""

PADDED_KINDS = ("primary", "nfv")


def c_json(obj: Any) -> str:
    """JSON as the C primary/nfv write it: no spaces."""
    return json.dumps(obj, separators=(",", ":"))


def worker_json(obj: Any) -> str:
    """JSON as SPP's vf/mirror/pcap formatter writes it: ``{ "k": [ 1, 2 ] }``, empty ``[  ]``."""
    if isinstance(obj, dict):
        return "{ " + ", ".join(f"{json.dumps(k)}: {worker_json(v)}" for k, v in obj.items()) + " }"
    if isinstance(obj, list):
        return "[ " + ", ".join(worker_json(v) for v in obj) + " ]"
    return json.dumps(obj)


def default_status(kind: str, client_id: int | None) -> dict[str, Any]:
    """A plausible ``status`` object (for vf/mirror/pcap: the ``info`` part) per spp-api.md §3/§5."""
    if kind == "primary":
        return {
            "master-lcore": 0,
            "lcores": [0, 1],
            "forwarder": {"status": "idling", "ports": ["phy:0", "ring:0"], "patches": []},
            "phy_ports": [
                {"id": 0, "eth": "56:48:4f:53:54:00", "rx": 0, "tx": 0, "tx_drop": 0,
                 "nof_queues": {"rx": 1, "tx": 1}, "flow": []},
            ],
            "ring_ports": [{"id": i, "rx": 0, "rx_drop": 0, "tx": 0, "tx_drop": 0} for i in range(2)],
            "pipes": [],
        }  # fmt: skip
    if kind == "nfv":
        return {"client-id": client_id, "status": "idling", "master-lcore": 1, "lcores": [1, 2],
                "ports": ["phy:0", "phy:1", "ring:0"], "patches": []}  # fmt: skip
    if kind in ("vf", "mirror"):
        vlan = {"operation": "none", "id": 0, "pcp": 0}
        component = {
            "core": 2, "name": "fwd1", "type": "forward" if kind == "vf" else "mirror",
            "rx_port": [{"port": "phy:0", "vlan": vlan}], "tx_port": [{"port": "ring:0", "vlan": vlan}],
        }  # fmt: skip
        info: dict[str, Any] = {
            "client-id": client_id, "phy": ["0", "0 nq 1"], "vhost": [], "ring": ["0"], "master-lcore": 1,
            "core": [component, {"core": 3, "type": "unuse"}],
        }  # fmt: skip
        if kind == "vf":
            info["classifier_table"] = [{"type": "mac", "value": "FA:16:3E:7D:CC:35", "port": "ring:0"}]
        return info
    if kind == "pcap":
        return {"client-id": client_id, "status": "idle", "master-lcore": 1,
                "core": [{"core": 2, "role": "receive", "rx_port": [{"port": "phy:0"}]},
                         {"core": 3, "role": "write", "filename": ""}]}  # fmt: skip
    raise ValueError(kind)


ReplySpec = dict[str, Any] | list[Any] | str | bytes | None
"""A scripted reply: JSON data (encoded in the process's style), raw text/bytes, or None = silence."""


class FakeProcess:
    """A fake SPP process connected to spp-ctl's ``port``.

    ``kind``: primary, nfv, vf, mirror or pcap. ``split``: number of sends a reply is cut into.
    Script replies with :attr:`replies` (exact command -> :data:`ReplySpec`) or a :attr:`handler`
    returning a ReplySpec or ``...`` to fall back to the default. ``silent`` stops all answers.
    """

    def __init__(
        self,
        port: int,
        kind: str,
        client_id: int | None = None,
        *,
        host: str = "127.0.0.1",
        split: int = 1,
        status: dict[str, Any] | None = None,
        padded: bool | None = None,
        replies: dict[str, ReplySpec] | None = None,
    ) -> None:
        self.kind = kind
        self.client_id = client_id
        self.split = split
        self.padded = kind in PADDED_KINDS if padded is None else padded
        self.status = status if status is not None else default_status(kind, client_id)
        self.replies: dict[str, ReplySpec] = dict(replies or {})  # set before connecting: no race
        self.handler: Callable[[str], Any] | None = None
        self.silent = False
        self.commands: list[str] = []
        self.eof = threading.Event()
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.settimeout(None)
        self._thread = threading.Thread(target=self._serve, name=f"fake-{kind}-{client_id}", daemon=True)
        self._thread.start()

    # -- behaviour ------------------------------------------------------------------------------

    def encode(self, reply: ReplySpec) -> bytes:
        if isinstance(reply, bytes):
            raw = reply
        elif isinstance(reply, str):
            raw = reply.encode()
        else:
            raw = (c_json(reply) if self.kind in PADDED_KINDS else worker_json(reply)).encode()
        if self.padded and len(raw) < MSG_SIZE:
            raw += b"\0" * (MSG_SIZE - len(raw))
        return raw

    def default_reply(self, command: str) -> ReplySpec:
        success = [{"result": "success"}]
        words = command.split()
        if command == "_get_client_id":
            return {"results": success, "client_id": self.client_id, "process_type": self.kind}
        if self.kind in PADDED_KINDS:
            if command == "status":
                return self.status
            if command == "patch reset":
                return b"patch\0reset"
            reply: dict[str, Any] = {"result": "succeeded", "command": words[0] if words else ""}
            if words[:1] in (["add"], ["del"]) and len(words) > 1:
                reply["port"] = words[1]
            if words[:1] == ["patch"] and len(words) == 3:
                reply["ports"] = {"src": words[1], "dst": words[2]}
            if words[:1] == ["flow"]:
                return {"result": "success", "message": "Flow rule validated"}
            return reply
        if command == "status":
            return {"results": success, "info": self.status}
        return {"results": success}

    def _serve(self) -> None:
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                command = data.decode()
                self.commands.append(command)
                if self.silent:
                    continue
                reply: Any = ...
                if self.handler is not None:
                    reply = self.handler(command)
                if reply is ...:
                    reply = self.replies[command] if command in self.replies else self.default_reply(command)
                if reply is None:
                    continue
                self._send(self.encode(reply))
                if command == "exit":
                    self.close()
                    break
        except OSError:
            pass
        finally:
            self.eof.set()

    def _send(self, raw: bytes) -> None:
        pieces = max(1, self.split)
        size = -(-len(raw) // pieces)
        for i in range(0, len(raw), size):
            self.sock.sendall(raw[i : i + size])
            if i + size < len(raw):
                time.sleep(0.01)

    # -- control --------------------------------------------------------------------------------

    def clear(self) -> None:
        self.commands.clear()

    def wait_commands(self, count: int, timeout: float = 3.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.commands) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.commands)

    def close(self) -> None:
        """Orderly close (FIN), as a process exiting normally."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def kill(self) -> None:
        """Abortive close (RST), as the kernel does for some crashed processes."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)  # wake our reader thread; sends nothing
        if threading.current_thread() is not self._thread:
            self.eof.wait(1)  # the fd is only released (and the RST sent) once no thread is in recv()
        with contextlib.suppress(OSError):
            self.sock.close()


def free_ports(count: int) -> list[int]:
    """Ports that were free a moment ago (bound together so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class CtlServer:
    """spp-ctl as a subprocess on free ports of 127.0.0.1, with an httpx client for its REST API."""

    def __init__(self, *extra: str, timeout: float = 1.0, launch_timeout: float = 3.0) -> None:
        self.extra = extra
        self.timeout = timeout
        self.launch_timeout = launch_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="spp-ctl-", suffix=".log", delete=False)  # noqa: SIM115
        for attempt in range(3):
            self.pri_port, self.sec_port, self.api_port = free_ports(3)
            if self._start():
                break
            if attempt == 2:
                raise RuntimeError(f"spp-ctl did not start:\n{self.log_text()}")
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=30)

    def _start(self) -> bool:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        cmd = [
            sys.executable, "-m", "spp.control.ctl.main", "-b", "127.0.0.1",
            "-p", str(self.pri_port), "-s", str(self.sec_port), "-a", str(self.api_port),
            "--log-level", "DEBUG", "--timeout", str(self.timeout),
            "--launch-timeout", str(self.launch_timeout),
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.api_port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        return False

    def log_text(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def connect(self, kind: str, client_id: int | None = None, **kw: Any) -> FakeProcess:
        """A fake process connected to the right port (not yet waited for)."""
        port = self.pri_port if kind == "primary" else self.sec_port
        return FakeProcess(port, kind, client_id, **kw)

    def processes(self) -> list[dict[str, Any]]:
        return self.http.get("/v1/processes").json()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(AttributeError):
            self.http.close()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)
