"""The processes of a bed: their command lines, and how one is run and watched.

A :class:`Supervised` process runs either as a plain child of the supervisor (its own session,
stdout and stderr to ``<state dir>/logs/<name>.log``) or in a tmux window of the bed's own tmux
server (``tmux -L <session>``; the pane's output piped to the same log). Either way it is known by
its pid, and only ever signalled while that pid still runs the command line it was given.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from spp.integrations.bed.schema import Bed, Secondary

PY = [sys.executable, "-m"]


def ctl_argv(bed: Bed) -> list[str]:
    c = bed.ctl
    ports = ["-p", str(c.pri_port), "-s", str(c.sec_port), "-a", str(c.api_port)]
    return [*PY, "spp.control.ctl.main", "-b", c.host, *ports]


def primary_argv(bed: Bed, log_dir: Path) -> list[str]:
    p = bed.primary
    argv = [*PY, "spp.processes.primary", "-l", p.lcores, "--file-prefix", bed.file_prefix, "--"]
    argv += ["-n", str(p.rings), "-s", f"{bed.ctl.host}:{bed.ctl.pri_port}", "--ring-size", str(p.ring_size)]
    argv += ["--log-dir", str(log_dir)]
    for iface in p.interfaces:
        argv += ["--iface", iface]
    if p.vhost_dir:
        argv += ["--vhost-dir", p.vhost_dir]
    return argv + list(p.args)


def secondary_argv(bed: Bed, sec: Secondary) -> list[str]:
    argv = [*PY, f"spp.processes.{sec.kind}", "-l", sec.lcores, "--file-prefix", bed.file_prefix, "--"]
    server = f"{bed.ctl.host}:{bed.ctl.sec_port}"
    argv += ["-n", str(sec.id)] if sec.kind == "nfv" else ["--client-id", str(sec.id)]
    argv += ["-s", server]
    if sec.vhost_client and sec.kind in ("nfv", "vf"):
        argv.append("--vhost-client")
    if sec.kind in ("nfv", "vf") and bed.primary.vhost_dir:
        argv += ["--vhost-dir", bed.primary.vhost_dir]
    if sec.kind == "pcap":
        argv += ["-c", str(sec.port), "--out-dir", sec.out_dir]
    return argv + list(sec.args)


def log_name(name: str) -> str:
    return name.replace(" ", "-")


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    if state == "Z":
        return None
    return raw.decode(errors="replace").split("\0")[:-1]


def pid_runs(pid: int | None, argv: list[str]) -> bool:
    """Whether ``pid`` is alive and still runs ``argv`` (so a recycled pid is never taken for it)."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap our own child
    return _cmdline(pid) == argv


@dataclass
class Tmux:
    """The bed's own tmux server (``-L``), one session, one window per process."""

    session: str
    cwd: Path

    def cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.session, *args], capture_output=True, text=True, check=check, timeout=30
        )

    def create(self) -> None:
        # The first window is a shell in the state dir, as spp-runner's "working dir" window; it
        # keeps the session alive whatever the processes do.
        self.cmd(
            "-f", "/dev/null", "new-session", "-d", "-s", self.session, "-n", "shell", "-c", str(self.cwd)
        )
        self.cmd("set-option", "-t", self.session, "remain-on-exit", "on")

    def window(self, name: str, argv: list[str], log: Path) -> tuple[str, int]:
        """A new window running ``argv``, its output appended to ``log``: ``(window id, pid)``.

        The window starts on a placeholder and ``argv`` replaces it once the pane is piped to
        the log (:meth:`respawn`): piping a pane that already runs ``argv`` loses what it
        printed first, such as why it failed at start, which left such a failure's log empty."""
        wid = self.cmd(
            "new-window", "-d", "-P", "-F", "#{window_id}", "-t", f"{self.session}:",
            "-n", name, "-c", str(self.cwd), "sleep", "infinity",
        ).stdout.strip()  # fmt: skip
        return wid, self.respawn(wid, argv, log)

    def respawn(self, wid: str, argv: list[str], log: Path) -> int:
        """Run ``argv`` in window ``wid`` (what it ran is killed), piped to ``log`` from its first
        byte (a pane's pipe outlives a respawn); its pid, or 0 when it has already exited."""
        self.cmd("pipe-pane", "-t", wid, "-o", f"cat >> {shlex.quote(str(log))}", check=False)
        self.cmd("respawn-window", "-k", "-t", wid, "-c", str(self.cwd), *argv)
        pid = self.cmd("display-message", "-p", "-t", wid, "#{pane_pid}", check=False).stdout.strip()
        return int(pid) if pid.isdigit() else 0  # (none: it has exited already; 0 is never alive)

    def kill_window(self, wid: str) -> None:
        self.cmd("kill-window", "-t", wid, check=False)

    def destroy(self) -> None:
        self.cmd("kill-server", check=False)


@dataclass
class Supervised:
    name: str  # as people say it: "spp-ctl", "primary", "nfv 1"
    argv: list[str]
    log: Path
    policy: str = "on-failure"
    tmux: Tmux | None = None
    pid: int | None = None
    window: str | None = None
    wanted: bool = True  # False once it is being stopped on purpose
    restarts: int = 0
    restart_times: list[float] = field(default_factory=list)
    next_start: float | None = None  # set while waiting to restart
    started: float = 0.0
    exit_status: int | None = None
    gave_up: bool = False
    _popen: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.exit_status = None
        if self.tmux is not None:
            if self.window is None:
                self.window, self.pid = self.tmux.window(self.name, self.argv, self.log)
            else:
                self.pid = self.tmux.respawn(self.window, self.argv, self.log)
        else:
            with open(self.log, "ab") as out:
                self._popen = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            self.pid = self._popen.pid
        self.started = time.time()
        self.next_start = None
        return self.pid

    def alive(self) -> bool:
        if self._popen is not None:
            code = self._popen.poll()
            if code is not None:
                self.exit_status = code
                return False
            return True
        return pid_runs(self.pid, self.argv)

    def signal(self, sig: int) -> None:
        if not self.alive() or self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if self._popen is not None:
                os.killpg(self.pid, sig)  # its own session: what it spawned goes too
            else:
                os.kill(self.pid, sig)

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        self.wanted = False
        self.next_start = None
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if self.wait_gone(0):
                break
            self.signal(sig)
            if self.wait_gone(wait):
                break
        if self.tmux is not None and self.window is not None:
            self.tmux.kill_window(self.window)
            self.window = None

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""
