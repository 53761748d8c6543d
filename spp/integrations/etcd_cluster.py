"""A real etcd cluster (Debian's ``etcd``), one member per network namespace, for the multi-host
harness, its tests and the plug-latency benchmark.

Each member is an ``etcd`` process started in its own namespace on its own address with etcd's
standard ports (2379 for clients, 2380 for peers), so a member can be killed, restarted or cut
off like a machine. Members are stopped by PID and their data directories removed on close.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CLIENT_PORT = 2379
PEER_PORT = 2380
#: Heart-beat and election time-out (ms): etcd's defaults (100/1000) re-elect on a machine whose
#: two cores are shared by many test processes; five times more is still quick to fail over.
HEARTBEAT_MS = 500
ELECTION_MS = 5000


class EtcdError(RuntimeError):
    pass


@dataclass
class EtcdMember:
    name: str
    ns: str
    address: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://{self.address}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{PEER_PORT}"

    @property
    def endpoint(self) -> str:
        """``HOST:PORT``, as ``spp-agent --etcd`` takes it."""
        return f"{self.address}:{CLIENT_PORT}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    """Members ``members`` (namespaces and addresses made by the caller); ``token`` keeps this
    cluster's members from ever joining another's."""

    members: list[EtcdMember]
    token: str
    created_dirs: list[Path] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def member(self, name: str) -> EtcdMember:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def _argv(self, m: EtcdMember) -> list[str]:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [
            "ip", "netns", "exec", m.ns,
            shutil.which("etcd") or "etcd",
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            "--logger", "zap",
        ]  # fmt: skip

    def start_member(self, m: EtcdMember) -> None:
        """Start (or restart, with its data kept) one member; does not wait for it."""
        if m.running:
            raise EtcdError(f"etcd member {m.name} is running already")
        if not m.data_dir.parent.exists():
            m.data_dir.parent.mkdir(parents=True)
            self.created_dirs.append(m.data_dir.parent)
        with open(m.log_path, "ab") as log:
            m.proc = subprocess.Popen(
                self._argv(m),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, timeout: float = 60) -> None:
        """Start every member and wait until the cluster has a leader and all answer."""
        for m in self.members:
            self.start_member(m)
        self.wait_healthy(timeout)

    def kill_member(self, name: str) -> None:
        """SIGKILL one member, as a crash of its machine would end it."""
        m = self.member(name)
        if m.proc is not None and m.proc.poll() is None:
            os.killpg(m.proc.pid, signal.SIGKILL)
            m.proc.wait(10)

    def restart_member(self, name: str, timeout: float = 60) -> None:
        m = self.member(name)
        self.start_member(m)
        self.wait_healthy(timeout, only=[m])

    def healthy(self, only: list[EtcdMember] | None = None) -> bool:
        """``etcdctl endpoint health`` of the given members (all by default) succeeds."""
        targets = only or self.members
        for m in targets:
            if not m.running:
                return False
        res = subprocess.run(
            [
                shutil.which("etcdctl") or "etcdctl",
                "--endpoints", ",".join(m.client_url for m in targets),
                "--command-timeout", "3s",
                "endpoint", "health",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # fmt: skip
        return res.returncode == 0

    def wait_healthy(self, timeout: float, only: list[EtcdMember] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy(only):
            for m in only or self.members:
                if m.proc is not None and m.proc.poll() is not None:
                    raise EtcdError(f"etcd member {m.name} exited: {self.log(m)[-2000:]}")
            if time.monotonic() > deadline:
                raise EtcdError(f"etcd cluster not healthy after {timeout:.0f} s")
            time.sleep(0.5)

    def log(self, m: EtcdMember) -> str:
        return m.log_path.read_text(errors="replace") if m.log_path.exists() else ""

    def close(self) -> None:
        """Stop every member by PID (SIGTERM, then SIGKILL) and remove the data directories."""
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(m.proc.pid, signal.SIGTERM)
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(m.proc.pid, signal.SIGKILL)
                    m.proc.wait(10)
        for d in self.created_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.created_dirs.clear()
