"""The primary's ``launch``: start a secondary and return once it has registered with spp-ctl.

SPP's primary forks the secondary and answers at once, so clients sleep and hope it is up. Ours
waits until the new process has answered spp-ctl's ``_get_client_id`` (it marks its row of the
shared process table), or reports why it did not: the id is taken, the process exited (with the
tail of its log), or it took too long.

No shell is involved: the argv goes to ``subprocess.Popen`` as a list, and the program is chosen
from a fixed table of secondary names, never from the request.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from spp.engine import safefile
from spp.engine.shm import STATE_FREE, STATE_REGISTERED, Segment

log = logging.getLogger(__name__)

SECONDARY_MODULES = {
    "spp_nfv": "spp.processes.nfv",
    "spp_vf": "spp.processes.vf",
    "spp_mirror": "spp.processes.mirror",
    "spp_pcap": "spp.processes.pcap",
}
REGISTER_TIMEOUT = 15.0


class LaunchError(Exception):
    pass


class Launcher:
    def __init__(self, seg: Segment, file_prefix: str, log_dir: Path) -> None:
        self.seg = seg
        self.file_prefix = file_prefix
        self.log_dir = log_dir
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    def launch(self, client_id: int, proc_name: str, args: list[str]) -> None:
        self.reap()
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
        pid, state = self.seg.process_state(client_id)
        if state != STATE_FREE:
            raise LaunchError(f"Secondary ID {client_id} is already used (pid {pid})")
        argv = [sys.executable, "-m", module, *self._with_prefix(args)]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}-{client_id}.log"
        try:
            # The default log dir is in /tmp: no link or stranger's file there is written through.
            safefile.check_own_directory(self.log_dir)
            log_fd = safefile.open_append(log_path)
        except OSError as e:
            raise LaunchError(f"cannot open the log file {log_path}: {e.strerror or e}") from None
        with os.fdopen(log_fd, "ab") as out:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.children[child.pid] = child
        log.info("launched %s id %d as pid %d (log %s)", name, client_id, child.pid, log_path)
        deadline = time.monotonic() + REGISTER_TIMEOUT
        while time.monotonic() < deadline:
            pid, state = self.seg.process_state(client_id)
            if pid == child.pid and state == STATE_REGISTERED:
                return
            if child.poll() is not None:
                raise LaunchError(
                    f"{name} {client_id} exited with status {child.returncode}: {_last_line(log_path)}"
                )
            time.sleep(0.02)
        raise LaunchError(
            f"{name} {client_id} (pid {child.pid}) did not register with spp-ctl within "
            f"{REGISTER_TIMEOUT:.0f} s; see {log_path}"
        )

    def _with_prefix(self, args: list[str]) -> list[str]:
        """Secondaries must map our segment: add ``--file-prefix`` to the EAL part if missing."""
        eal = args[: args.index("--")] if "--" in args else []
        if any(a == "--file-prefix" or a.startswith("--file-prefix=") for a in eal):
            return args
        if "--" not in args:
            return ["--file-prefix", self.file_prefix, "--", *args]
        return ["--file-prefix", self.file_prefix, *args]

    def reap(self) -> None:
        for pid, child in list(self.children.items()):
            if child.poll() is not None:
                del self.children[pid]

    def stop_all(self) -> None:
        """Terminate the secondaries this primary launched (they cannot outlive its segment)."""
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        for child in self.children.values():
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
        self.children.clear()


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"
