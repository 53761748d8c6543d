"""spp vm: the QEMU command line against SPP's recipe, the guest image, a real guest under TCG."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spp.integrations.testbed import wait_for
from spp.integrations.vm import manager
from spp.integrations.vm.cli import parse_ids
from spp.integrations.vm.image import (
    BOOT_MARK,
    READY_MARK,
    find_installed_kernel,
    guest_panicked,
    guest_ready,
    resolve_modules,
)
from spp.integrations.vm.qemu import VmSpecError
from tests.vmutil import type_on_console

SPP_VM = [sys.executable, "-m", "spp.integrations.vm.cli"]


def spp_vm(
    *args: str, state: Path, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [*SPP_VM, "--state-dir", str(state), *args], capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def dry_run_argv(*args: str, state: Path) -> list[str]:
    out = spp_vm("start", *args, "--dry-run", state=state).stdout
    assert not state.exists(), "a dry run creates nothing"
    return shlex.split(out.replace("\\\n", " "))


# SPP's recipe for one vhost VM (qemu-hda vm-launcher.py; spec spp-tools.md section 3), with
# vid 2, -d 1,2, -c 2, -m 1024, -vc (client mode on the SPP side), KVM, a disk image:
RECIPE = """
sudo qemu-system-x86_64 -cpu host -numa node,memdev=mem -mem-prealloc -hda {hda} -m 1024
  -smp cores=2,threads=1,sockets=1
  -object memory-backend-file,id=mem,size=1024M,mem-path=/dev/hugepages,share=on
  -enable-kvm -nographic
  -chardev socket,id=chr1,path=/tmp/sock1,server
  -netdev vhost-user,id=net_vu2_1,chardev=chr1,vhostforce
  -device virtio-net-pci,netdev=net_vu2_1,mac=00:AD:BE:B4:02:01
  -chardev socket,id=chr2,path=/tmp/sock2,server
  -netdev vhost-user,id=net_vu2_2,chardev=chr2,vhostforce
  -device virtio-net-pci,netdev=net_vu2_2,mac=00:AD:BE:B4:02:02
  -monitor telnet::44902,server,nowait
"""


def options(argv: list[str]) -> list[tuple[str, str | None]]:
    """(option, value) pairs of a QEMU command line."""
    out: list[tuple[str, str | None]] = []
    i = 1
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            out.append((argv[i], argv[i + 1]))
            i += 2
        else:
            out.append((argv[i], None))
            i += 1
    return out


def modernise(opt: tuple[str, str | None]) -> tuple[str, str | None]:
    """QEMU 7.2 spellings of the recipe's bare booleans (``server`` -> ``server=on``)."""
    name, value = opt
    if value is not None:
        value = re.sub(r",(server|vhostforce)(?=,|$)", r",\1=on", value)
    return name, value


def test_dry_run_matches_spps_vm_recipe(tmp_path: Path) -> None:
    hda = tmp_path / "ubuntu.qcow2"
    state = tmp_path / "state"
    argv = dry_run_argv(
        "2", "-d", "1,2", "-c", "2", "-m", "1024", "--vhost-client", "--accel", "kvm" if _kvm() else "tcg",
        "--hda", str(hda), "--hugepages", "/dev/hugepages", state=state,
    )  # fmt: skip
    assert argv[0] == "qemu-system-x86_64"
    ours = options(argv)
    recipe = [modernise(o) for o in options(shlex.split(RECIPE.format(hda=hda))[1:])]
    # Deliberate differences: accel via -machine (not -enable-kvm), no -nographic (-display none
    # plus a serial socket), a unix-socket monitor (the recipe's telnet one listened on every
    # interface), vectors=0 on NICs under TCG, and -cpu host only with KVM.
    replaced = {("-enable-kvm", None), ("-nographic", None), ("-monitor", "telnet::44902,server=on,nowait")}
    for opt in recipe:
        if opt in replaced:
            continue
        if not _kvm() and opt[0] == "-cpu":
            continue
        if not _kvm() and opt[0] == "-device":
            opt = (opt[0], f"{opt[1]},vectors=0")
        assert opt in ours, f"recipe option {opt} missing from {ours}"
    assert ("-machine", f"q35,accel={'kvm' if _kvm() else 'tcg'}") in ours
    monitor = dict(ours)["-monitor"]
    assert monitor == f"unix:{state}/2/monitor.sock,server=on,wait=off"
    assert "-no-reboot" not in argv  # as in the recipe, a reboot in the guest resets the VM
    # the recipe's order of the per-NIC trio is kept
    chardevs = [v for k, v in ours if k in ("-chardev", "-netdev", "-device")][:6]
    assert chardevs[0].startswith("socket,id=chr1,") and chardevs[3].startswith("socket,id=chr2,")


def test_dry_run_under_tcg_with_client_sockets_and_image(tmp_path: Path) -> None:
    argv = dry_run_argv(
        "7", "-d", "3", "--ip", "10.9.0.7/24", "--mac", "02:00:00:00:07:03", "--accel", "tcg",
        "--image", str(tmp_path / "img"), state=tmp_path / "s",
    )  # fmt: skip
    opts = options(argv)
    assert ("-chardev", "socket,id=chr3,path=/tmp/sock3") in opts  # QEMU is the client
    assert ("-device", "virtio-net-pci,netdev=net_vu7_3,mac=02:00:00:00:07:03,vectors=0") in opts
    assert ("-object", "memory-backend-memfd,id=mem,size=256M,share=on") in opts
    assert ("-numa", "node,memdev=mem") in opts
    assert "-cpu" not in dict(opts)
    assert dict(opts)["-kernel"] == str(tmp_path / "img" / "vmlinuz")
    assert "spp.net=02:00:00:00:07:03@10.9.0.7/24" in dict(opts)["-append"]
    # a reboot in the guest resets the VM, as in SPP's recipes; --no-reboot makes it end QEMU
    assert "-no-reboot" not in argv
    no_reboot = dry_run_argv(
        "7", "-d", "3", "--ip", "10.9.0.7/24", "--mac", "02:00:00:00:07:03", "--accel", "tcg",
        "--image", str(tmp_path / "img"), "--no-reboot", state=tmp_path / "s",
    )  # fmt: skip
    assert no_reboot == [*argv, "-no-reboot"]
    # a panic is reported to QEMU (pvpanic, after the NICs) and, by default, ends it
    assert argv[-4:] == ["-device", "pvpanic-pci", "-action", "panic=shutdown"]
    devices = [v for k, v in opts if k == "-device"]
    assert devices[-1] == "pvpanic-pci" and devices[0].startswith("virtio-net-pci")
    for choice, action in (("pause", "panic=pause"), ("reboot", "panic=none")):
        other = dry_run_argv(
            "7", "-d", "3", "--accel", "tcg", "--image", str(tmp_path / "img"), "--on-panic", choice,
            state=tmp_path / "s",
        )  # fmt: skip
        assert other[-2:] == ["-action", action]
    r = spp_vm("start", "7", "--on-panic", "ignore", "--dry-run", state=tmp_path / "s", check=False)
    assert r.returncode == 2 and "invalid choice: 'ignore'" in r.stderr


def test_nic_options_reach_every_nic_and_nothing_else_does(tmp_path: Path) -> None:
    argv = dry_run_argv(
        "3", "-d", "1,2", "--accel", "tcg", "--nic-opt", "guest_tso4=off", "--nic-opt", "csum=off",
        "--image", str(tmp_path / "img"), state=tmp_path / "s",
    )  # fmt: skip
    devices = [v for k, v in options(argv) if k == "-device"]
    assert devices == [
        f"virtio-net-pci,netdev=net_vu3_{n},mac=00:AD:BE:B4:03:0{n},vectors=0,guest_tso4=off,csum=off"
        for n in (1, 2)
    ] + ["pvpanic-pci"]
    for bad in ("guest_tso4=off,addr=5", "x", "a=b c", "=off"):
        r = spp_vm("start", "3", "-d", "1", "--nic-opt", bad, "--dry-run", state=tmp_path, check=False)
        assert r.returncode == 1 and f"invalid NIC option '{bad}'" in r.stderr, r.stderr


def test_bad_vm_options_are_refused(tmp_path: Path) -> None:
    r = spp_vm("start", "1", "-d", "1,x", "--dry-run", state=tmp_path, check=False)
    assert r.returncode == 1 and "invalid device ids '1,x'" in r.stderr
    r = spp_vm("start", "1", "-d", "1", "--ip", "a", "--ip", "b", "--dry-run", state=tmp_path, check=False)
    assert r.returncode == 1 and "1 NIC(s)" in r.stderr
    r = spp_vm("start", "100", "--dry-run", state=tmp_path, check=False)
    assert r.returncode == 1 and "invalid VM id 100" in r.stderr
    # client mode needs SPP's socket to exist already
    r = spp_vm("start", "1", "-d", "97", "--accel", "tcg", state=tmp_path, check=False)
    if not Path("/tmp/sock97").exists():
        assert r.returncode == 1 and "/tmp/sock97 does not exist" in r.stderr
    r = spp_vm("stop", "5", state=tmp_path, check=False)
    assert r.returncode == 1 and "no VM 5" in r.stderr
    assert parse_ids("1,3-5") == [1, 3, 4, 5]
    with pytest.raises(VmSpecError):
        parse_ids("")


def _kvm() -> bool:
    from spp.integrations.vm.qemu import kvm_usable

    return kvm_usable()


def test_auto_accel_picks_one_qemu_can_run_on() -> None:
    """``--accel auto`` must not pick KVM where ``/dev/kvm`` opens but QEMU aborts on it (as in
    some nested VMs, this machine among them): a paused QEMU on the chosen accelerator starts and
    quits cleanly."""
    from spp.integrations.vm.qemu import QEMU, resolve_accel

    accel = resolve_accel("auto")
    argv = [QEMU, "-machine", f"q35,accel={accel}", "-m", "32", "-display", "none", "-nodefaults"]
    argv += ["-no-user-config", "-S", "-monitor", "stdio", "-serial", "none"]
    if accel == "kvm":
        argv += ["-cpu", "host"]
    done = subprocess.run(argv, input="quit\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"QEMU on {accel}: {done.stderr[-500:]}"


# -- the image and a real guest --------------------------------------------------------------------


def test_modules_resolve_dependencies_first() -> None:
    kernel = find_installed_kernel()
    if kernel is None:
        pytest.skip("no kernel with modules installed in /boot")
    names = [Path(m).name for m in resolve_modules(kernel.modules)]
    before = [
        ("virtio_ring.ko", "virtio.ko"),
        ("virtio.ko", "virtio_pci.ko"),
        ("failover.ko", "net_failover.ko"),
        ("net_failover.ko", "virtio_net.ko"),
        ("virtio_pci_modern_dev.ko", "virtio_pci.ko"),
        ("virtio_pci_legacy_dev.ko", "virtio_pci.ko"),
    ]
    for dep, mod in before:
        assert names.index(dep) < names.index(mod)


def test_modules_resolve_without_modules_dep_as_in_the_package(tmp_path: Path) -> None:
    """A kernel unpacked from its .deb has no modules.dep: each module's depends= is read instead."""
    kernel = find_installed_kernel()
    if kernel is None:
        pytest.skip("no kernel with modules installed in /boot")
    with_dep = resolve_modules(kernel.modules)
    for rel in with_dep:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((kernel.modules / rel).read_bytes())
    (tmp_path / "kernel/drivers/net/dummy.ko").write_bytes(b"\0name=dummy\0")  # not wanted
    without = resolve_modules(tmp_path)
    assert sorted(without) == sorted(with_dep)
    for i, mod in enumerate(without):  # each module after everything it depends on
        deps = [
            d for d in with_dep if d != mod and Path(d).name.split(".")[0] in _depends(kernel.modules / mod)
        ]
        assert all(without.index(d) < i for d in deps)


def _depends(path: Path) -> list[str]:
    m = re.search(rb"\0depends=([^\0]*)\0", path.read_bytes())
    return m.group(1).decode().split(",") if m and m.group(1) else []


@pytest.fixture(scope="module")
def image(vm_image: Path) -> Path:
    assert (vm_image / "vmlinuz").stat().st_size > 1_000_000
    assert 0 < (vm_image / "initrd.img").stat().st_size < 8_000_000
    meta = json.loads((vm_image / "image.json").read_text())
    assert "virtio_net.ko" in meta["modules"]
    assert meta["modules"][0] == "pvpanic.ko" and meta["modules"][1] == "pvpanic-pci.ko"  # loaded first
    return vm_image


def test_image_cli_builds(tmp_path: Path) -> None:
    r = spp_vm("image", "-o", str(tmp_path / "img"), state=tmp_path / "s")
    assert "guest image in" in r.stdout
    assert (tmp_path / "img" / "vmlinuz").exists() and (tmp_path / "img" / "initrd.img").exists()


@pytest.mark.slow
def test_guest_boots_under_tcg_and_answers_on_the_serial_console(image: Path, vm_state: Path) -> None:
    spp_vm(
        "start", "4", "--image", str(image), "--accel", "tcg", "--name", "probe", "--no-reboot",
        state=vm_state,
    )  # fmt: skip
    st = json.loads(spp_vm("status", "4", "--json", state=vm_state).stdout)
    assert st["state"] == "running" and st["accel"] == "tcg"
    pid = st["pid"]
    r = spp_vm("exec", "4", "uname -r; hostname; wget -qO- http://127.0.0.1/", state=vm_state)
    kernel = json.loads((image / "image.json").read_text())["kernel_version"]
    assert r.stdout.splitlines() == [kernel, "probe", "hello from probe"]
    r = spp_vm("exec", "4", "--", "sh", "-c", "exit 3", state=vm_state, check=False)
    assert r.returncode == 3
    r = spp_vm("exec", "4", "exit_with() { return $1; }; exit_with 127", state=vm_state, check=False)
    assert r.returncode == 127  # the whole status, however the console splits its output
    assert READY_MARK in (vm_state / "4" / "serial.log").read_text(errors="replace")
    listed = json.loads(spp_vm("list", "--json", state=vm_state).stdout)
    assert [v["id"] for v in listed] == [4]
    # --no-reboot: a reboot in the guest ends QEMU; stop then only removes what it left
    type_on_console(vm_state / "4" / "serial.sock", "reboot -f")
    wait_for(lambda: manager.read_pid(vm_state / "4") is None, 60, "QEMU to exit on the guest's reboot")
    log = (vm_state / "4" / "serial.log").read_bytes()
    assert b"reboot: Restarting system" in log, log[-500:]
    assert not guest_ready(log), "not ready from the moment the kernel restarts"
    assert json.loads(spp_vm("status", "4", "--json", state=vm_state).stdout)["state"] == "stopped"
    assert "was not running; state removed" in spp_vm("stop", "4", state=vm_state).stdout
    assert not (vm_state / "4").exists()
    assert not Path(f"/proc/{pid}").exists() or "qemu" not in Path(f"/proc/{pid}/cmdline").read_text()
    assert not vm_state.exists(), "the last VM's stop removes the emptied state dir"


def test_vm_command_in_spps_shell(tmp_path: Path) -> None:
    from spp.integrations.testbed import Testbed

    with Testbed(log_dir=tmp_path / "bed") as bed:
        spp = [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}"]
        env = {**os.environ, "SPP_FILE_PREFIX": bed.prefix}
        r = subprocess.run(
            [*spp, "-e", "vm start 1 -d 1 --accel tcg --dry-run"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "-device virtio-net-pci,netdev=net_vu1_1,mac=00:AD:BE:B4:01:01,vectors=0" in r.stdout
        assert f"/tmp/spp-{bed.prefix}/vm/1/serial.sock" in r.stdout  # the instance's state dir
        r = subprocess.run([*spp, "-e", "vm stop 9"], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 1 and "no VM 9" in r.stdout + r.stderr


def test_guest_ready_reads_the_last_boot_of_the_serial_log() -> None:
    """Ready only after the last boot's ready mark; not from the kernel's restart message on, even
    before the next boot has printed its boot mark."""
    boot, ready = f"{BOOT_MARK}\n".encode(), f"{READY_MARK}\n".encode()
    restart = b"[   12.3] reboot: Restarting system\n"
    assert not guest_ready(b"")
    assert not guest_ready(boot)
    assert guest_ready(boot + ready)
    assert not guest_ready(boot + ready + restart)
    assert not guest_ready(boot + ready + restart + boot)
    assert guest_ready(boot + ready + restart + boot + ready)
    assert not guest_ready(boot + ready + b"reboot: Power down\n")
    assert not guest_ready(boot + ready + b"Kernel panic - not syncing: Attempted to kill init!\n")
    assert guest_ready(ready), "an older image's log, without boot marks"


def monitor(state: Path, command: str) -> str:
    """One command on the VM's QEMU monitor (HMP), its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(state / "monitor.sock"))
        s.settimeout(10)
        s.sendall(command.encode() + b"\n")
        out = b""
        while out.count(b"(qemu)") < 2:  # the greeting's prompt, then the one after the answer
            out += s.recv(4096)
    return out.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize(("vm_id", "choice"), [(5, "pause"), (6, "stop")])
def test_a_panicking_guest_does_not_boot_again(image: Path, vm_state: Path, vm_id: int, choice: str) -> None:
    """Reboots allowed, a panic still does not reset the guest (which, panicking at every boot,
    would loop for ever): by default QEMU ends; with --on-panic pause the VM stays, stopped."""
    spp_vm(
        "start", str(vm_id), "--image", str(image), "--accel", "tcg", "--on-panic", choice, "--wait",
        state=vm_state,
    )  # fmt: skip
    state = vm_state / str(vm_id)
    pid = manager.read_pid(state)
    type_on_console(state / "serial.sock", "echo c > /proc/sysrq-trigger")
    wait_for(lambda: guest_panicked((state / "serial.log").read_bytes()), 60, "the guest to panic")
    st = json.loads(spp_vm("status", str(vm_id), "--json", state=vm_state).stdout)
    assert st["panicked"] and not st["guest_ready"] and st["on_panic"] == choice
    if choice == "pause":
        wait_for(lambda: "guest-panicked" in monitor(state, "info status"), 30, "QEMU to see the panic")
        assert manager.read_pid(state) == pid and st["state"] == "running"
        assert "the guest panicked" in spp_vm("status", str(vm_id), state=vm_state).stdout
        spp_vm("stop", str(vm_id), state=vm_state)
        return
    wait_for(lambda: manager.read_pid(state) is None, 60, "QEMU to end on the panic")
    st = json.loads(spp_vm("status", str(vm_id), "--json", state=vm_state).stdout)
    assert st["state"] == "stopped" and st["panicked"]
    time.sleep(2)  # (a reset would have printed its boot mark by now)
    log = (state / "serial.log").read_bytes()
    assert log.count(BOOT_MARK.encode()) == 1, log[-800:]
    assert "was not running" in spp_vm("stop", str(vm_id), state=vm_state).stdout


def test_guest_panicked_reads_the_last_boot() -> None:
    boot, panic = f"{BOOT_MARK}\n".encode(), b"[    9.1] Kernel panic - not syncing: sysrq triggered crash\n"
    assert not guest_panicked(b"")
    assert not guest_panicked(boot)
    assert guest_panicked(boot + panic)
    assert not guest_panicked(boot + panic + boot), "it rebooted (on_panic reboot): a new boot"
