"""The primary's ``launch``: start a secondary, then watch it until it has registered or failed.

SPP's primary forks the secondary and answers at once, so clients sleep and hope it is up. Ours
also answers at once (the reply carries the child's ``pid``), so a slow or broken secondary never
holds up the primary's other commands; spp-ctl then asks ``launch_status ID`` until the new
process has registered or the primary reports why it did not. A watcher thread decides that:

* the child marked its row of the shared process table as registered (it answered spp-ctl's
  ``_get_client_id``): done;
* the child exited first (a bad option, no segment, ...): failed, with the tail of what it wrote;
* it did not register within the launch timeout: it is killed and the launch failed.

Either way a failed child is gone and its id free when ``launch_status`` says ``failed``.

No shell is involved: the argv goes to ``subprocess.Popen`` as a list, and the program is chosen
from a fixed table of secondary names, never from the request.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spp.engine import safefile
from spp.engine.shm import STATE_FREE, STATE_REGISTERED, Segment, pid_alive

log = logging.getLogger(__name__)

SECONDARY_MODULES = {
    "spp_nfv": "spp.processes.nfv",
    "spp_vf": "spp.processes.vf",
    "spp_mirror": "spp.processes.mirror",
    "spp_pcap": "spp.processes.pcap",
}
REGISTER_TIMEOUT = 15.0
WATCH_INTERVAL = 0.05
CONNECT_ATTEMPTS = 3
"""A launched secondary gives up after this many failed connections to spp-ctl (and says so),
instead of retrying forever like a secondary started by hand."""
TAIL_CHARS = 400
HOLDER_GRACE = 1.0
"""Seconds a launch waits for the previous holder of its id to finish ending."""

STARTING, REGISTERED, FAILED, EXITED = "starting", "registered", "failed", "exited"


class LaunchError(Exception):
    pass


@dataclass
class Launch:
    """One launched secondary, from spawn until it exits."""

    client_id: int
    name: str
    child: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int  # the log is appended to: this launch's output starts here
    started: float
    state: str = STARTING
    message: str = ""

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"client_id": self.client_id, "state": self.state, "pid": self.child.pid}
        if self.message:
            out["message"] = self.message
        return out


class Launcher:
    def __init__(
        self, seg: Segment, file_prefix: str, log_dir: Path, register_timeout: float = REGISTER_TIMEOUT
    ) -> None:
        self.seg = seg
        self.file_prefix = file_prefix
        self.log_dir = log_dir
        self.register_timeout = register_timeout
        self._lock = threading.Lock()
        self._launches: dict[int, Launch] = {}  # the latest launch of each id
        self._wake = threading.Event()
        self._quit = False
        self._watcher: threading.Thread | None = None

    # -- commands (control thread) -------------------------------------------------------------

    def launch(self, client_id: int, proc_name: str, args: list[str]) -> int:
        """Spawn the secondary and return its pid; the watcher follows it from here."""
        name = proc_name if proc_name.startswith("spp_") else f"spp_{proc_name}"
        module = SECONDARY_MODULES.get(name)
        if module is None:
            raise LaunchError(
                f"'{proc_name}' is not a secondary (expected one of {', '.join(SECONDARY_MODULES)})"
            )
        if importlib.util.find_spec(module) is None:
            raise LaunchError(f"{name} is not available in this build yet")
        if not 0 < client_id < len(self.seg.procs):
            raise LaunchError(f"secondary id {client_id} out of range 1..{len(self.seg.procs) - 1}")
        self._wait_for_holder(client_id)
        with self._lock:
            argv = [sys.executable, "-m", module, *self._with_prefix(args)]
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}-{client_id}.log"
            env = {**os.environ, "SPP_CONNECT_ATTEMPTS": str(CONNECT_ATTEMPTS)}
            try:
                # The default log dir is in /tmp: no link or stranger's file there is written through.
                safefile.check_own_directory(self.log_dir)
                log_fd = safefile.open_append(log_path)
            except OSError as e:
                raise LaunchError(f"cannot open the log file {log_path}: {e.strerror or e}") from None
            with os.fdopen(log_fd, "ab") as out:
                offset = os.lseek(log_fd, 0, os.SEEK_END)
                child = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    env=env,
                )
            self._launches[client_id] = Launch(client_id, name, child, log_path, offset, time.monotonic())
            self._start_watcher()
        log.info("launched %s id %d as pid %d (log %s)", name, client_id, child.pid, log_path)
        self._wake.set()
        return child.pid

    def _conflict(self, client_id: int) -> str | None:
        """Why ``client_id`` cannot be launched now, or None."""
        with self._lock:
            pending = self._launches.get(client_id)
        # pid_alive, not poll(): poll() answers None while the watcher thread is reaping.
        if pending is not None and pending.state == STARTING and pid_alive(pending.child.pid):
            what = f"{pending.name}, pid {pending.child.pid}"
            return f"Secondary ID {client_id} is already being launched ({what})"
        pid, state = self.seg.process_state(client_id)
        if state != STATE_FREE:
            return f"Secondary ID {client_id} is already used (pid {pid})"
        return None

    def _wait_for_holder(self, client_id: int) -> None:
        """Refuse an id in use, after a short grace: spp-ctl sees a process's connection close
        while the kernel is still tearing the process down, so a relaunch right after a DELETE
        (or a kill) may find the old holder not quite gone."""
        deadline = time.monotonic() + HOLDER_GRACE
        while (conflict := self._conflict(client_id)) is not None:
            if time.monotonic() > deadline:
                raise LaunchError(conflict)
            time.sleep(0.02)

    def status(self, client_id: int) -> dict[str, Any]:
        """What became of the latest launch of ``client_id`` (``state`` ``none`` if there was none)."""
        with self._lock:
            launch = self._launches.get(client_id)
            return launch.report() if launch is not None else {"client_id": client_id, "state": "none"}

    def _with_prefix(self, args: list[str]) -> list[str]:
        """Secondaries must map our segment: add ``--file-prefix`` to the EAL part if missing."""
        eal = args[: args.index("--")] if "--" in args else []
        if any(a == "--file-prefix" or a.startswith("--file-prefix=") for a in eal):
            return args
        if "--" not in args:
            return ["--file-prefix", self.file_prefix, "--", *args]
        return ["--file-prefix", self.file_prefix, *args]

    # -- the watcher thread --------------------------------------------------------------------

    def _start_watcher(self) -> None:
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch, name="launch-watcher", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        while not self._quit:
            with self._lock:
                launches = list(self._launches.values())
            for launch in launches:
                self._check(launch)
            # Poll often while a launch is pending; otherwise only reap now and then.
            pending = any(launch.state == STARTING for launch in launches)
            self._wake.wait(WATCH_INTERVAL if pending else 1.0)
            self._wake.clear()

    def _check(self, launch: Launch) -> None:
        child = launch.child
        code = child.poll()  # also reaps, so no zombie keeps the pid
        if launch.state != STARTING:
            if code is not None and launch.state == REGISTERED:
                launch.state = EXITED
            return
        pid, state = self.seg.process_state(launch.client_id)
        if pid == child.pid and state == STATE_REGISTERED:
            launch.state = REGISTERED
            log.info("%s %d (pid %d) registered", launch.name, launch.client_id, child.pid)
        elif code == 0:
            # A clean exit is an ordered one (exit, SIGTERM), possibly after a registration this
            # watcher was too slow to see.
            launch.message = f"{launch.name} {launch.client_id} (pid {child.pid}) exited"
            launch.state = EXITED
        elif code is not None:
            self._fail(launch, f"exited with status {code} before registering: {self._tail(launch)}")
        elif time.monotonic() - launch.started > self.register_timeout:
            _kill(child)
            self._fail(
                launch,
                f"did not register with spp-ctl within {self.register_timeout:g} s and was stopped: "
                f"{self._tail(launch)}",
            )

    def _fail(self, launch: Launch, reason: str) -> None:
        self.seg.clear_process_slot(launch.client_id, launch.child.pid)
        launch.message = f"{launch.name} {launch.client_id} (pid {launch.child.pid}) {reason}"
        launch.state = FAILED
        log.warning("launch failed: %s", launch.message)

    @staticmethod
    def _tail(launch: Launch) -> str:
        """What the child said last: its last error line, else its last line (this launch only)."""
        try:
            with open(launch.log_path, "rb") as f:
                f.seek(launch.log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return f"(no log at {launch.log_path})"
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if not lines:
            return f"(no output; log {launch.log_path})"
        errors = [ln for ln in lines if "error" in ln.lower()]
        line = (errors or lines)[-1]
        if len(line) > TAIL_CHARS:
            line = line[: TAIL_CHARS - 3] + "..."
        return f"{line} (log {launch.log_path})"

    def stop(self) -> None:
        """Stop watching; kill children still starting (secondaries that registered stay: like
        DPDK's, they outlive the primary)."""
        self._quit = True
        self._wake.set()
        with self._lock:
            launches = list(self._launches.values())
        for launch in launches:
            self._check(launch)  # one that registered since the watcher last looked is left alone
            if launch.state == STARTING and launch.child.poll() is None:
                _kill(launch.child)
                self.seg.clear_process_slot(launch.client_id, launch.child.pid)


def _kill(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL it if it lingers, and reap it."""
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)
        try:
            child.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
