"""A throw-away etcd for a quick try and for the tests: Debian's ``etcd`` on loopback, its data
in a temporary directory removed at the end. Members of a small cluster can be made with
``name``/``cluster`` (all on this host, or on addresses given)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from spp.integrations.testbed import free_port


class LocalEtcdError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies, so a killed
    test run or agent leaves no etcd behind (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def etcd_binary() -> str:
    path = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if path is None:
        raise LocalEtcdError("etcd is not installed (Debian package etcd-server)")
    return path


class LocalEtcd:
    """``with LocalEtcd() as etcd: etcd.endpoint`` -> ``127.0.0.1:PORT``."""

    def __init__(
        self,
        client_port: int | None = None,
        peer_port: int | None = None,
        host: str = "127.0.0.1",
        name: str = "spp",
        cluster: str | None = None,
        cluster_state: str = "new",
        data_dir: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host, self.name = host, name
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.cluster = cluster or f"{name}=http://{host}:{self.peer_port}"
        self.cluster_state = cluster_state
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="spp-etcd-"))
        self.log_path = Path(log_path) if log_path else self.data_dir / "etcd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    def argv(self) -> list[str]:
        client = f"http://{self.host}:{self.client_port}"
        peer = f"http://{self.host}:{self.peer_port}"
        return [
            etcd_binary(),
            "--name", self.name,
            "--data-dir", str(self.data_dir / "data"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.cluster,
            "--initial-cluster-state", self.cluster_state,
            "--initial-cluster-token", "spp-local",
        ]  # fmt: skip

    def start(self, wait: bool = True) -> LocalEtcd:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise LocalEtcdError(f"etcd exited ({self.proc.returncode}): {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"http://{self.endpoint}/health", timeout=1)
                if r.status_code == 200 and r.json().get("health") == "true":
                    return
            time.sleep(0.1)
        raise LocalEtcdError(f"etcd at {self.endpoint} not healthy after {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, n: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop (or kill, with SIGKILL) the member; its data stays for :meth:`start`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalEtcd:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
