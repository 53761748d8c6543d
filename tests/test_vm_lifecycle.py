"""``spp-vm ctl`` (lwaftrctl's role) and ``spp-vm ssh`` (sppsh's) with real processes and a real guest.

The switch (spp-ctl, primary, nfv 1 with vhost:1 -> vhost:2) starts first, then the VM on those
ports, then an app in the guest that sends through the switch (ping to an absent neighbour: ARP
requests out of eth0, into vhost:1, across the nfv, out of vhost:2 into the guest's eth1).
Stopping goes the other way; core pinning is read back from /proc.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from spp.integrations.testbed import free_port, wait_for
from spp.integrations.vm import lifecycle, manager
from spp.integrations.vm.image import BOOT_MARK, build_image
from tests.leakcheck import run_token
from tests.vmutil import type_on_console

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(900)]
SPP_VM = [sys.executable, "-m", "spp.integrations.vm.cli"]
CPUS = sorted(os.sched_getaffinity(0))


def allowed(pid: int, tid: int | None = None) -> str:
    path = f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status"
    for line in Path(path).read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split()[1]
    raise AssertionError(path)


@pytest.fixture(scope="module")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lc-image")
    build_image(out)
    return out


def console_session(prefix: str, key: str, typed: bytes) -> str:
    """``spp-vm ssh KEY`` on a pseudo-terminal: type a line, read until it printed, leave."""
    main_fd, sub_fd = pty.openpty()
    proc = subprocess.Popen(
        [*SPP_VM, "--file-prefix", prefix, "ssh", key], stdin=sub_fd, stdout=sub_fd, stderr=sub_fd
    )
    os.close(sub_fd)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        sent_at = 0.0
        while time.monotonic() < deadline and b"spp-42" not in seen.replace(typed, b""):
            # Typed again after 10 s unanswered, as a user would: a TCG guest on a loaded machine
            # can miss a line typed while its shell is not yet reading the console.
            if b"Ctrl-]" in seen and time.monotonic() - sent_at > 10:
                os.write(main_fd, typed)
                sent_at = time.monotonic()
            ready, _, _ = select.select([main_fd], [], [], 1)
            if ready:
                seen += os.read(main_fd, 4096)
        os.write(main_fd, b"\x1d")
        assert proc.wait(20) == 0
        with contextlib.suppress(OSError):
            while select.select([main_fd], [], [], 0.5)[0]:
                seen += os.read(main_fd, 4096)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main_fd)
    text = seen.decode(errors="replace")
    assert "Console closed." in text, text
    return text.replace(typed.decode(), "")


def ctl(cfg: Path, *words: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*SPP_VM, "ctl", *words, "-f", str(cfg)], capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.mark.skipif(len(CPUS) < 2, reason="pinning the switch and the VM apart needs two CPUs")
def test_switch_vm_and_app_start_and_stop_in_order_with_pinning(tmp_path: Path, guest_image: Path) -> None:
    prefix = f"lc{run_token()}{uuid.uuid4().hex[:4]}"
    socks = tmp_path / "socks"
    socks.mkdir()
    api = free_port()
    cfg = tmp_path / "lifecycle.yml"
    cfg.write_text(
        f"""
file_prefix: {prefix}
ctl: {{api_port: {api}, pri_port: {free_port()}, sec_port: {free_port()}}}
switch:
  primary: {{lcores: "0", pin: [{CPUS[0]}]}}
  nfv: {{id: 1, lcores: "0,1", pin: [{CPUS[1]}]}}
  vhost_dir: {socks}
  ports: [vhost:1, vhost:2]
  patches: [[vhost:1, vhost:2]]
vm: {{id: 7, dev_ids: [1, 2], ips: [10.9.0.1/24, 10.9.1.1/24], pin: [{CPUS[0]}], accel: tcg,
     image: {guest_image}}}
app: {{start: "ping -i 0.2 10.9.0.99"}}
"""
    )
    vm_root = manager.default_state_root(prefix)
    try:
        r = ctl(cfg, "start", "all")
        lines = r.stdout.splitlines()
        assert [line.split(":")[0] for line in lines] == ["switch", "vm", "app"], r.stdout
        assert ctl(cfg, "status").stdout.splitlines() == ["switch: running", "vm: running", "app: running"]

        # Pinning: every QEMU thread on the VM's core; the nfv on its own.
        qemu = manager.read_pid(manager.vm_dir(vm_root, 7))
        assert qemu is not None
        tids = [int(t.name) for t in Path(f"/proc/{qemu}/task").iterdir()]
        assert {allowed(qemu, t) for t in tids} == {str(CPUS[0])}
        switch = json.loads((Path("/tmp") / f"spp-{prefix}" / "lifecycle" / "switch.json").read_text())
        assert allowed(switch["nfv-1"]["pid"]) == str(CPUS[1])

        # The app in the guest sends through the switch: vhost:1 in, vhost:2 out, and growing.
        http = httpx.Client(base_url=f"http://127.0.0.1:{api}")

        def stats() -> dict[str, dict[str, int]]:
            return {s["port"]: s for s in http.get("/v1/nfvs/1").json()["stats"]}

        wait_for(lambda: stats()["vhost:2"]["tx"] >= 3, 60, "the guest's ARP requests across the nfv")

        # sppsh's role: the VM by id, by name and by address; no sshd in our guest, so the console.
        for key in ("7", "spp-vm7", "10.9.1.1"):
            r = subprocess.run(
                [*SPP_VM, "--file-prefix", prefix, "ssh", key, "--", "cat /proc/sys/kernel/hostname"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert r.returncode == 0 and r.stdout.strip() == "spp-vm7", r.stdout + r.stderr
        r = subprocess.run(
            [*SPP_VM, "--file-prefix", prefix, "ssh", "10.9.9.9", "true"], capture_output=True, text=True
        )
        assert r.returncode == 1 and "no VM '10.9.9.9'" in r.stderr and "7 (spp-vm7)" in r.stderr

        # Without a command: the terminal is connected to the console until Ctrl-].
        assert "spp-42" in console_session(prefix, "7", b"echo spp-$((6*7))\r")

        # A reboot inside the guest (the nfv is the vhost-user server here): QEMU stays, the new
        # boot's driver sets vhost:1 and vhost:2 up again; the app is gone with the old boot.
        serial_log = manager.vm_dir(vm_root, 7) / "serial.log"
        boots = serial_log.read_bytes().count(BOOT_MARK.encode())
        type_on_console(manager.vm_dir(vm_root, 7) / "serial.sock", "reboot -f")
        rebooted = lambda: serial_log.read_bytes().count(BOOT_MARK.encode()) > boots  # noqa: E731
        wait_for(rebooted, 120, "the guest to reboot")
        assert manager.read_pid(manager.vm_dir(vm_root, 7)) == qemu

        # restart of the app alone keeps the VM (same QEMU) and the switch; its frames cross the
        # nfv again (the rings of the new boot).
        sent = stats()["vhost:2"]["tx"]
        ctl(cfg, "restart", "app")
        assert manager.read_pid(manager.vm_dir(vm_root, 7)) == qemu
        assert ctl(cfg, "app", "status").stdout.strip() == "app: running"  # lwaftrctl's word order too
        wait_for(lambda: stats()["vhost:2"]["tx"] >= sent + 3, 60, "the rebooted guest's ARP across the nfv")
        assert all(s["errors"] == 0 for s in stats().values() if "errors" in s), stats()

        r = ctl(cfg, "stop", "all")
        assert [line.split(":")[0] for line in r.stdout.splitlines()] == ["app", "vm", "switch"]
        assert ctl(cfg, "status").stdout.splitlines() == ["switch: stopped", "vm: stopped", "app: stopped"]
        assert not (Path("/tmp") / f"spp-{prefix}").exists()
        assert not Path(f"/dev/shm/spp_{prefix}.seg").exists()
        assert ctl(cfg, "stop", "all").returncode == 0  # stopping what is stopped is not an error
    finally:
        with open(os.devnull, "w") as quiet:
            lifecycle.Lifecycle(lifecycle.load_config(cfg), out=quiet).stop("all")


def test_bad_lifecycle_files_and_words_are_named(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yml"
    for text, message in [
        ("switch: {nfv: {id: 1}}\nvms: {}\n", "unknown key(s) vms"),
        ("vm: {id: 1, pin: [a]}\n", "vm.pin"),
        ("app: {stop: x}\n", "app.start"),
        ("vm: {reboot: maybe}\n", "vm.reboot"),
        ("vm: {on_panic: ignore}\n", "vm.on_panic: expected one of stop, pause, reboot, not 'ignore'"),
        ("- 1\n", "mapping"),
    ]:
        cfg.write_text(text)
        r = ctl(cfg, "start", "all", check=False)
        assert r.returncode == 1 and message in r.stderr, r.stderr
    cfg.write_text("switch: {}\n")
    r = ctl(cfg, "launch", "all", check=False)
    assert r.returncode == 1 and "unknown action" in r.stderr
    r = ctl(cfg, "start", "vm", check=False)
    assert r.returncode == 1 and "no 'vm' section" in r.stderr
