"""The QEMU command line of a VM on SPP's vhost-user ports, as SPP's VM recipes build it.

SPP's launcher (qemu-hda ``vm-launcher.py``, and the gsg's manual VM) gives each ``vhost:N`` port a
trio ``-chardev socket,id=chrN,path=/tmp/sockN[,server]``, ``-netdev vhost-user,id=net_vu<vm>_N,
chardev=chrN,vhostforce`` and ``-device virtio-net-pci,netdev=net_vu<vm>_N,mac=00:AD:BE:B4:<vm>:<N>``,
shares guest memory (``share=on`` plus ``-numa node,memdev=mem``, which vhost-user needs), and
adds ``-cpu host -smp cores=C,threads=1,sockets=1 -m MEM -mem-prealloc``. We keep all of that,
with these differences:

* memory is ``memory-backend-memfd`` (no hugetlbfs needed) unless ``hugepages`` names a mount;
* QEMU is the socket *server* exactly when the SPP side uses ``--vhost-client`` (``server=on``);
* KVM when a QEMU can run on ``/dev/kvm`` (probed once), else TCG, where every virtio-net-pci
  gets ``vectors=0`` (QEMU 7.2 under TCG crashes in vhost-user MSI-X set-up otherwise) and
  ``-cpu host`` is dropped;
* the monitor and serial console are unix sockets in the VM's state dir (the recipes' telnet
  monitor listened on every interface); the serial output is also logged to a file;
* without a disk image (``-hda``), the guest is a kernel and initramfs (``spp vm image``) whose
  command line carries the NICs' addresses.

Like the recipes, a reboot inside the guest resets the machine and QEMU stays: the virtio devices
are reset too (QEMU stops the vhost-user rings with GET_VRING_BASE), and the guest's driver
negotiates features, memory table and rings anew when it boots, on the same sockets.
``reboot=False`` (``spp vm start --no-reboot``) adds QEMU's ``-no-reboot``: a reboot ends QEMU
instead.

A panic is not a reboot: a guest that panics at every boot would otherwise reset, boot and panic
again for ever, at a core's worth of CPU. Every VM gets a ``pvpanic-pci`` device (after the NICs,
so their PCI addresses are the recipes'), through which the guest kernel reports its panic to
QEMU, and ``-action panic=`` says what QEMU does then (``on_panic``): ``stop`` (the default) ends
QEMU, ``pause`` stops the vCPUs and keeps the VM for inspection, ``reboot`` lets the guest reset
as it asks. The guest image loads the pvpanic driver first thing; a disk image's guest needs
its own (Debian's and Ubuntu's kernels have it as a module).
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "qemu-system-x86_64"
#: ``on_panic`` -> QEMU's ``-action panic=`` (``none``: the guest's own reboot on panic goes on)
PANIC_ACTIONS = {"stop": "shutdown", "pause": "pause", "reboot": "none"}
DEFAULT_ON_PANIC = "stop"
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
#: a virtio-net-pci property as ``--nic-opt`` takes it: one ``name=value``, no comma (which would
#: start another property), e.g. ``guest_tso4=off``
NIC_OPTION = re.compile(r"[a-z][a-z0-9_-]*=[A-Za-z0-9_.:-]+")


class VmSpecError(ValueError):
    """An option that cannot make a VM; the message names it."""


@dataclass(frozen=True)
class Nic:
    """One vhost-user NIC on SPP's ``vhost:<dev_id>`` socket."""

    dev_id: int
    socket: str
    mac: str
    address: str | None = None  # ADDR/PREFIX configured in the guest (spp vm image guests)


@dataclass
class VmSpec:
    vm_id: int
    state_dir: Path
    nics: list[Nic] = field(default_factory=list)
    mem_mb: int = 256
    cores: int = 1
    accel: str = "tcg"  # "kvm" or "tcg", already resolved
    server: bool = False  # QEMU listens on the vhost-user sockets (SPP side uses --vhost-client)
    kernel: Path | None = None
    initrd: Path | None = None
    hda: Path | None = None
    hugepages: str | None = None
    append: str = ""
    qemu: str = QEMU
    name: str | None = None
    #: extra virtio-net-pci properties for every NIC (``guest_tso4=off``: a guest that does not
    #: take TCP aggregates)
    nic_options: list[str] = field(default_factory=list)
    #: a reboot in the guest resets the machine (QEMU's default, and SPP's recipes'); False: it
    #: ends QEMU (``-no-reboot``)
    reboot: bool = True
    #: what a panic in the guest does (see the module's docstring): stop, pause or reboot
    on_panic: str = DEFAULT_ON_PANIC

    @property
    def hostname(self) -> str:
        return self.name or f"spp-vm{self.vm_id}"

    @property
    def serial_socket(self) -> Path:
        return self.state_dir / "serial.sock"

    @property
    def serial_log(self) -> Path:
        return self.state_dir / "serial.log"

    @property
    def monitor_socket(self) -> Path:
        return self.state_dir / "monitor.sock"

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "qemu.pid"


def default_mac(vm_id: int, dev_id: int) -> str:
    """vm-launcher's vhost NIC MAC, ``00:AD:BE:B4:<vm>:<dev>`` (two decimal digits each)."""
    if not (0 <= vm_id <= 99 and 0 <= dev_id <= 99):
        raise VmSpecError(f"no default MAC for VM {vm_id} NIC vhost:{dev_id}: give --mac")
    return f"00:AD:BE:B4:{vm_id:02d}:{dev_id:02d}"


def vhost_socket(dev_id: int, directory: str = "/tmp") -> str:
    """Where SPP's ``vhost:N`` port has its socket (``<--vhost-dir>/sockN``, /tmp by default)."""
    return os.path.join(directory, f"sock{dev_id}")


def kvm_usable(qemu: str = QEMU) -> bool:
    """Whether a KVM guest can start here: ``/dev/kvm`` answers *and* QEMU can set a vCPU up on it.

    The device alone is not proof: in some nested set-ups ``/dev/kvm`` opens and answers, yet the
    host refuses MSRs QEMU writes at reset and QEMU aborts. So QEMU itself is asked once, paused
    (``-S``) with no guest, and told to quit; a clean exit means KVM works.
    """
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION) != KVM_API_VERSION:
            return False
    except OSError:
        return False
    finally:
        os.close(fd)
    return _qemu_starts_on_kvm(qemu)


@functools.cache
def _qemu_starts_on_kvm(qemu: str) -> bool:
    argv = [qemu, "-machine", "q35,accel=kvm", "-cpu", "host", "-m", "32", "-display", "none"]
    argv += ["-nodefaults", "-no-user-config", "-S", "-monitor", "stdio", "-serial", "none"]
    try:
        done = subprocess.run(argv, input="quit\n", capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def resolve_accel(choice: str) -> str:
    """``auto``: KVM where a guest can really run on it (see :func:`kvm_usable`), else TCG."""
    if choice == "auto":
        return "kvm" if kvm_usable() else "tcg"
    if choice == "kvm" and not kvm_usable():
        raise VmSpecError("--accel kvm: /dev/kvm is missing or not usable here")
    if choice not in ("kvm", "tcg"):
        raise VmSpecError(f"invalid --accel '{choice}' (auto, kvm or tcg)")
    return choice


def kernel_append(spec: VmSpec) -> str:
    words = ["console=ttyS0", "quiet", "panic=-1", f"spp.name={spec.hostname}"]
    nets = [f"{n.mac.lower()}@{n.address}" if n.address else n.mac.lower() for n in spec.nics]
    if nets:
        words.append("spp.net=" + ",".join(nets))
    if spec.append:
        words.append(spec.append)
    return " ".join(words)


def qemu_argv(spec: VmSpec) -> list[str]:
    """The full argv (no shell involved) that starts the VM."""
    if spec.hda is None and (spec.kernel is None or spec.initrd is None):
        raise VmSpecError("a VM needs a guest: --hda IMAGE, or a kernel and initrd (spp vm image)")
    mem = spec.mem_mb
    argv = [spec.qemu, "-name", spec.hostname, "-machine", f"q35,accel={spec.accel}"]
    if spec.accel == "kvm":
        argv += ["-cpu", "host"]
    argv += ["-smp", f"cores={spec.cores},threads=1,sockets=1", "-m", str(mem)]
    if spec.hugepages:
        backend = f"memory-backend-file,id=mem,size={mem}M,mem-path={spec.hugepages},share=on"
    else:
        backend = f"memory-backend-memfd,id=mem,size={mem}M,share=on"
    argv += ["-object", backend, "-numa", "node,memdev=mem", "-mem-prealloc"]
    if spec.hda is not None:
        argv += ["-hda", str(spec.hda)]
    else:
        argv += ["-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", kernel_append(spec)]
    for nic in spec.nics:
        chardev = f"socket,id=chr{nic.dev_id},path={nic.socket}"
        if spec.server:
            chardev += ",server=on"
        netdev = f"net_vu{spec.vm_id}_{nic.dev_id}"
        device = f"virtio-net-pci,netdev={netdev},mac={nic.mac}"
        if spec.accel == "tcg":
            device += ",vectors=0"
        for opt in spec.nic_options:
            if not NIC_OPTION.fullmatch(opt):
                raise VmSpecError(f"invalid NIC option '{opt}' (one NAME=VALUE, e.g. guest_tso4=off)")
            device += f",{opt}"
        argv += [
            "-chardev",
            chardev,
            "-netdev",
            f"vhost-user,id={netdev},chardev=chr{nic.dev_id},vhostforce=on",
            "-device",
            device,
        ]
    argv += [
        "-chardev",
        f"socket,id=serial0,path={spec.serial_socket},server=on,wait=off,logfile={spec.serial_log}",
        "-serial",
        "chardev:serial0",
        "-monitor",
        f"unix:{spec.monitor_socket},server=on,wait=off",
        "-pidfile",
        str(spec.pidfile),
        "-display",
        "none",
        "-nodefaults",
    ]
    if spec.on_panic not in PANIC_ACTIONS:
        raise VmSpecError(f"invalid on-panic action '{spec.on_panic}' ({', '.join(PANIC_ACTIONS)})")
    argv += ["-device", "pvpanic-pci", "-action", f"panic={PANIC_ACTIONS[spec.on_panic]}"]
    if not spec.reboot:
        argv.append("-no-reboot")
    return argv


def shell_words(argv: list[str]) -> str:
    """The command as a shell would take it: each word quoted where needed, one option per line."""
    lines: list[str] = [shlex.quote(argv[0])]
    for word in argv[1:]:
        quoted = shlex.quote(word)
        if word.startswith("-") and not word.lstrip("-").isdigit():
            lines.append(quoted)
        else:
            lines[-1] += " " + quoted
    return " \\\n  ".join(lines)
