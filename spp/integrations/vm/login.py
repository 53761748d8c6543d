"""``spp vm ssh VM [CMD...]``: log into a VM found by id, name or address (spp-runner's ``sppsh``).

The VM is looked up among the instance's VMs (``spp vm list``): by id (exactly, not by prefix as
sppsh did), by guest name (``spp-vm<ID>`` or ``--name``), by a NIC's address (with or without
its ``/PREFIX``) or MAC. Then:

* when an SSH server greets us on port 22 of that address, ``ssh [USER@]ADDR [CMD...]`` takes over;
* otherwise the serial console is used: with CMD it runs there and its output and exit status
  are returned (``spp vm exec``), without CMD the terminal is connected to the console until
  ``Ctrl-]`` (our small guests have no sshd; the console has a root shell).

``--serial`` skips the ssh attempt.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import shutil
import socket
import sys
import termios
import tty
from pathlib import Path
from typing import Any

from spp.integrations.vm import manager
from spp.integrations.vm.manager import VmError

ESCAPE = b"\x1d"  # Ctrl-]


def find_vm(root: Path, key: str) -> dict[str, Any]:
    """The running-or-not VM whose id, name, address or MAC is ``key``."""
    vms = manager.list_vms(root)
    for vm in vms:
        if key.isdigit() and int(key) == vm["id"]:
            return vm
    for vm in vms:
        if key == vm["name"]:
            return vm
        for nic in vm["nics"]:
            addr = (nic["address"] or "").split("/")[0]
            if (addr and key in (nic["address"], addr)) or key.lower() == nic["mac"].lower():
                return vm
    known = ", ".join(f"{v['id']} ({v['name']})" for v in vms) or "none"
    raise VmError(f"no VM '{key}' under {root} (VMs: {known})")


def guest_address(vm: dict[str, Any]) -> str | None:
    for nic in vm["nics"]:
        if nic["address"]:
            return str(nic["address"]).split("/")[0]
    return None


def ssh_answers(address: str, timeout: float = 2.0) -> bool:
    """Whether an SSH server greets us at ``address`` (its ``SSH-`` banner, not a bare TCP
    accept: a middlebox may accept any connection)."""
    with contextlib.suppress(OSError), socket.create_connection((address, 22), timeout=timeout) as s:
        s.settimeout(timeout)
        return s.recv(64).startswith(b"SSH-")
    return False


def console(sock_path: Path) -> None:
    """Connect this terminal to the guest's serial console until Ctrl-]."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(sock_path))
    except OSError as e:
        raise VmError(f"cannot connect to the serial console {sock_path}: {e.strerror}") from None
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    print("Connected to the guest's console; Ctrl-] leaves.\r", file=sys.stderr)
    try:
        if saved is not None:
            tty.setraw(fd)
        s.sendall(b"\n")
        while True:
            ready, _, _ = select.select([fd, s], [], [])
            if s in ready:
                data = s.recv(65536)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if fd in ready:
                data = os.read(fd, 1024)
                if not data or ESCAPE in data:
                    s.sendall(data.split(ESCAPE)[0])
                    break
                s.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        s.close()
        print("\r\nConsole closed.", file=sys.stderr)


def ssh(root: Path, key: str, command: list[str], user: str | None = None, serial: bool = False) -> int:
    vm = find_vm(root, key)
    if vm["state"] != "running":
        raise VmError(f"VM {vm['id']} ({vm['name']}) is not running")
    address = guest_address(vm)
    if not serial and address and shutil.which("ssh") and ssh_answers(address):
        target = f"{user}@{address}" if user else address
        os.execvp("ssh", ["ssh", target, *command])
    if command:
        # As ssh does: the words joined make one command line for a shell of its own (so that
        # 'exit 3' ends that shell, not the console's).
        line = "sh -c " + shlex.quote(" ".join(command))
        res = manager.exec_in(root, vm["id"], line)
        sys.stdout.write(res.output)
        sys.stdout.flush()
        return res.status
    console(Path(vm["serial"]))
    return 0
