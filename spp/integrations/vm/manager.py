"""The VMs started with ``spp vm``: one state dir each, under the instance's state dir.

``<state root>/<vm id>/`` holds ``vm.json`` (the spec and the argv), ``qemu.pid`` (written and
locked by QEMU's ``-pidfile``), ``qemu.log`` (QEMU's own stdout/stderr), ``serial.sock`` and
``serial.log`` (the guest console), ``monitor.sock``. The state root defaults to
``/tmp/spp-<file prefix>/vm``, so two SPP instances on one host keep their VMs apart, and
``stop`` removes the VM's directory: nothing is left behind.

QEMU runs in its own session, not daemonized: as vhost-user *client* it fails at once if SPP's
socket is missing, but as *server* it blocks until SPP connects, so ``start`` returns once the
serial socket exists (QEMU created its chardevs) or QEMU has exited (then with its error).
A VM is identified by its pid *and* its command line naming this state dir, so a recycled pid
is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from spp.integrations.vm.console import ConsoleError, ExecResult, serial_exec, wait_for_mark
from spp.integrations.vm.image import READY_MARK, guest_panicked, guest_ready
from spp.integrations.vm.qemu import DEFAULT_ON_PANIC, Nic, VmSpec, qemu_argv


class VmError(RuntimeError):
    """A VM operation that cannot be done; the message says why."""


def default_state_root(file_prefix: str | None = None) -> Path:
    prefix = file_prefix or os.environ.get("SPP_FILE_PREFIX", "spp")
    return Path("/tmp") / f"spp-{prefix}" / "vm"


def vm_dir(root: Path, vm_id: int) -> Path:
    return root / str(vm_id)


def read_pid(state: Path) -> int | None:
    """The VM's QEMU pid if it is running (its cmdline names this state dir), else None."""
    try:
        pid = int((state / "qemu.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if str(state / "qemu.pid").encode() not in cmdline.split(b"\0"):
        return None
    return pid


def start(spec: VmSpec, timeout: float = 30.0) -> int:
    """Start QEMU for ``spec``; returns its pid once it is up (or raises with QEMU's message)."""
    state = spec.state_dir
    if read_pid(state) is not None:
        raise VmError(f"VM {spec.vm_id} is already running (stop it first)")
    if state.exists():
        shutil.rmtree(state)  # a stopped VM's leftovers
    if not spec.server:
        for nic in spec.nics:
            if not Path(nic.socket).exists():
                raise VmError(
                    f"vhost:{nic.dev_id}: {nic.socket} does not exist; add the port in SPP first "
                    "(or run QEMU as the socket server with --vhost-client)"
                )
    argv = qemu_argv(spec)
    state.mkdir(parents=True)
    record = {"spec": _spec_json(spec), "argv": argv, "started": time.time()}
    (state / "vm.json").write_text(json.dumps(record, indent=2) + "\n")
    with open(state / "qemu.log", "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = (state / "qemu.log").read_text(errors="replace").strip()[-1500:]
            shutil.rmtree(state, ignore_errors=True)
            raise VmError(f"QEMU exited with status {proc.returncode}: {msg}")
        if spec.serial_socket.exists() and spec.pidfile.exists():
            return proc.pid
        time.sleep(0.05)
    _kill(proc.pid)
    raise VmError(f"QEMU did not come up within {timeout:.0f} s; see {state / 'qemu.log'}")


def _spec_json(spec: VmSpec) -> dict[str, Any]:
    d = asdict(spec)
    for k, v in d.items():
        if isinstance(v, Path):
            d[k] = str(v)
    return d


def load(root: Path, vm_id: int) -> dict[str, Any]:
    state = vm_dir(root, vm_id)
    try:
        return json.loads((state / "vm.json").read_text())
    except (OSError, ValueError):
        raise VmError(f"no VM {vm_id} under {root}") from None


def status(root: Path, vm_id: int) -> dict[str, Any]:
    rec = load(root, vm_id)
    state = vm_dir(root, vm_id)
    pid = read_pid(state)
    spec = rec["spec"]
    ready = panicked = False
    log = state / "serial.log"
    if log.exists():
        console = log.read_bytes()
        ready = guest_ready(console)
        panicked = guest_panicked(console)
    return {
        "id": vm_id,
        "name": spec.get("name") or f"spp-vm{vm_id}",
        "state": "running" if pid else "stopped",
        "pid": pid,
        "accel": spec["accel"],
        "mem_mb": spec["mem_mb"],
        "nics": [
            {"port": f"vhost:{n['dev_id']}", "socket": n["socket"], "mac": n["mac"], "address": n["address"]}
            for n in spec["nics"]
        ],
        "vhost_mode": "server" if spec["server"] else "client",
        "guest_ready": ready,
        "panicked": panicked,
        "on_panic": spec.get("on_panic", DEFAULT_ON_PANIC),
        "serial": str(state / "serial.sock"),
        "serial_log": str(log),
        "uptime_s": round(time.time() - rec["started"], 1) if pid else None,
    }


def list_vms(root: Path) -> list[dict[str, Any]]:
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir(), key=lambda p: (len(p.name), p.name)):
        if d.name.isdigit() and (d / "vm.json").exists():
            out.append(status(root, int(d.name)))
    return out


def stop(root: Path, vm_id: int, timeout: float = 10.0) -> bool:
    """Stop the VM (monitor ``quit``, then SIGTERM, then SIGKILL) and remove its state dir.
    Returns whether it was running."""
    state = vm_dir(root, vm_id)
    if not state.exists():
        raise VmError(f"no VM {vm_id} under {root}")
    pid = read_pid(state)
    if pid is not None:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(state / "monitor.sock"))
            s.sendall(b"quit\n")
            time.sleep(0.1)
        if not _wait_gone(pid, timeout / 2):
            _kill(pid, timeout / 2)
    shutil.rmtree(state, ignore_errors=True)
    # The last VM gone: so are the (empty) state dirs, /tmp/spp-<prefix>/vm and /tmp/spp-<prefix>.
    with contextlib.suppress(OSError):
        root.rmdir()
        if root.name == "vm":
            root.parent.rmdir()
    return pid is not None


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill(pid: int, timeout: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_gone(pid, timeout):
            return


def exec_in(
    root: Path, vm_id: int, command: str, timeout: float = 60.0, boot_timeout: float = 120.0
) -> ExecResult:
    """Run ``command`` in the guest's shell (waiting for the guest to be ready first)."""
    state = vm_dir(root, vm_id)
    load(root, vm_id)
    pid = read_pid(state)
    if pid is None:
        raise VmError(f"VM {vm_id} is not running")
    try:
        wait_for_mark(
            state / "serial.log",
            READY_MARK,
            boot_timeout,
            alive=lambda: read_pid(state) is not None,
            ready=guest_ready,
        )
        return serial_exec(state / "serial.sock", command, timeout)
    except ConsoleError as e:
        raise VmError(f"VM {vm_id}: {e}") from None


__all__ = ["Nic", "VmError", "VmSpec", "default_state_root", "exec_in", "list_vms", "start", "status", "stop"]
