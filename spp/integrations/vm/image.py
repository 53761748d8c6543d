"""``spp vm image``: a small bootable guest built from Debian packages only.

The guest is a kernel plus an initramfs, no disk: Debian 12's ``linux-image-amd64`` kernel (the one
installed in /boot, or extracted from the package with ``apt-get download`` + ``dpkg-deb -x``), and
a gzip'd cpio archive holding ``busybox-static``, the kernel's virtio network modules with their
dependencies (resolved from ``modules.dep``) and an ``/init`` script. About 10 MB; it boots under
TCG in seconds.

The ``/init`` script loads the modules, configures each NIC from the kernel command line
(``spp.net=MAC@ADDR/PREFIX,...``, matched by MAC so PCI order does not matter), names the host
(``spp.name=``), starts busybox ``httpd`` (port 80, serving ``/www``) as a service for tests,
prints :data:`READY_MARK` on the serial console and runs a root shell there,
restarted if it exits. It prints :data:`BOOT_MARK` first, so after a reboot (QEMU keeps one serial
log) the guest is ready again only once a ready mark follows the last boot mark
(:func:`guest_ready`). The archive is written here (newc format), so no ``cpio`` tool is needed
and nothing runs as root inside a chroot.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

READY_MARK = "spp-guest: ready"
BOOT_MARK = "spp-guest: booting"
BUSYBOX = Path("/bin/busybox")
#: What the guest needs to see a virtio-net NIC (virtio_pci pulls in its legacy/modern helpers,
#: virtio_net pulls in failover and net_failover); dependencies come from modules.dep.
WANTED_MODULES = ("virtio_pci", "virtio_net")
#: Taken when the kernel has them, loaded before the others: pvpanic_pci reports a panic to QEMU
#: (``spp vm start --on-panic``), from the moment it is loaded.
OPTIONAL_MODULES = ("pvpanic_pci",)

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "spp-guest: booting"
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
for m in $(cat /etc/modules); do insmod "/lib/modules/$m" || echo "spp-guest: insmod $m failed"; done
ip link set lo up
name=spp-guest
for word in $(cat /proc/cmdline); do
    case "$word" in
        spp.name=*) name="${word#spp.name=}" ;;
        spp.net=*) nets="${word#spp.net=}" ;;
    esac
done
hostname "$name"
# NICs appear asynchronously after virtio_net loads: wait for each MAC (up to ~10 s).
for entry in $(echo "$nets" | tr ',' ' '); do
    mac="${entry%%@*}"
    addr="${entry#*@}"
    dev=""
    tries=0
    while [ -z "$dev" ] && [ $tries -lt 100 ]; do
        for d in /sys/class/net/*; do
            [ "$(cat "$d/address" 2>/dev/null)" = "$mac" ] && dev="${d##*/}"
        done
        [ -z "$dev" ] && { tries=$((tries + 1)); sleep 0.1; }
    done
    if [ -z "$dev" ]; then echo "spp-guest: no NIC with MAC $mac"; continue; fi
    ip link set "$dev" up
    [ "$addr" != "$entry" ] && [ -n "$addr" ] && ip addr add "$addr" dev "$dev"
    echo "spp-guest: $dev $mac $addr"
done
mkdir -p /www
echo "hello from $name" > /www/index.html
httpd -p 80 -h /www
export PS1='spp-guest# '
echo "spp-guest: ready"
while true; do
    setsid -c sh -l </dev/ttyS0 >/dev/ttyS0 2>&1
done
"""


class ImageError(RuntimeError):
    """The image cannot be built; the message says what is missing."""


@dataclass
class Kernel:
    version: str
    vmlinuz: Path
    modules: Path  # /lib/modules/<version>


def find_installed_kernel() -> Kernel | None:
    """The newest kernel in /boot whose modules are installed too."""
    found = []
    for vmlinuz in Path("/boot").glob("vmlinuz-*"):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        modules = Path("/lib/modules") / version
        if (modules / "modules.dep").exists() and os.access(vmlinuz, os.R_OK):
            found.append(Kernel(version, vmlinuz, modules))
    if not found:
        return None
    return max(
        found, key=lambda k: [int(p) if p.isdigit() else 0 for p in k.version.replace("-", ".").split(".")]
    )


def kernel_from_package(workdir: Path, package: str = "linux-image-amd64") -> Kernel:
    """Download ``package`` (following the metapackage to the real image) and extract it."""
    real = package
    deps = subprocess.run(["apt-cache", "depends", package], capture_output=True, text=True)
    for line in deps.stdout.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            real = line.split(":", 1)[1].strip()
            break
    dl = subprocess.run(["apt-get", "download", real], cwd=workdir, capture_output=True, text=True)
    if dl.returncode != 0:
        raise ImageError(f"apt-get download {real} failed: {dl.stderr.strip()[-500:]}")
    debs = sorted(workdir.glob(f"{real}_*.deb"))
    if not debs:
        raise ImageError(f"apt-get download {real} produced no .deb")
    root = workdir / "root"
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
    for vmlinuz in (root / "boot").glob("vmlinuz-*"):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        for base in (root / "lib/modules", root / "usr/lib/modules"):
            if (base / version / "kernel").is_dir():
                return Kernel(version, vmlinuz, base / version)
    raise ImageError(f"{debs[-1].name} holds no kernel with modules")


def _module_name(path: str) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


def _dependency_map(modules_dir: Path) -> tuple[Callable[[str], list[str]], dict[str, str]]:
    """A module's dependencies and ``{name: path}``: from modules.dep when depmod has run (an
    installed kernel), else from each needed module's own ``depends=`` (a kernel unpacked from its
    package, which ships no modules.dep; only the modules visited are read)."""
    by_name: dict[str, str] = {}
    dep_file = modules_dir / "modules.dep"
    if dep_file.exists():
        table: dict[str, list[str]] = {}
        for line in dep_file.read_text().splitlines():
            mod, _, rest = line.partition(":")
            table[mod] = rest.split()
            by_name[_module_name(mod)] = mod
        return (lambda mod: table.get(mod, [])), by_name
    for path in modules_dir.rglob("*.ko"):
        rel = str(path.relative_to(modules_dir))
        by_name[_module_name(rel)] = rel

    def from_modinfo(mod: str) -> list[str]:
        found = re.search(rb"\0depends=([^\0]*)\0", (modules_dir / mod).read_bytes())
        names = found.group(1).decode().split(",") if found and found.group(1) else []
        return [by_name[n] for n in (x.replace("-", "_") for x in names) if n in by_name]

    return from_modinfo, by_name


def resolve_modules(
    modules_dir: Path, wanted: tuple[str, ...] = WANTED_MODULES, optional: tuple[str, ...] = ()
) -> list[str]:
    """Relative paths of ``optional`` (those the kernel has) and ``wanted`` and their
    dependencies, in that order, dependencies first."""
    deps, by_name = _dependency_map(modules_dir)
    order: list[str] = []

    def visit(mod: str, trail: tuple[str, ...]) -> None:
        if mod in order or mod in trail:
            return
        for dep in deps(mod):
            visit(dep, (*trail, mod))
        order.append(mod)

    for name in (*(m for m in optional if m in by_name), *wanted):
        if name not in by_name:
            raise ImageError(f"kernel module {name} not found under {modules_dir}")
        visit(by_name[name], ())
    return order


class Cpio:
    """A newc cpio archive written in memory (what the kernel unpacks as an initramfs)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1
        self.mtime = int(time.time())

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, self.mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.ino += 1
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self._pad()
        self.out.write(data)
        self._pad()

    def _pad(self) -> None:
        self.out.write(b"\0" * (-self.out.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, 0o020000 | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


@dataclass
class Image:
    directory: Path
    kernel_version: str
    modules: list[str]

    @property
    def vmlinuz(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"


#: what the guest kernel prints as it restarts, powers off or halts (``pr_emerg`` with the
#: "reboot: " prefix, so on the serial console whatever the log level): from then until the next
#: boot's ready mark the guest is not ready, even before that boot has printed its boot mark
SHUTDOWN_MARKS = (b"reboot: Restarting system", b"reboot: Power down", b"reboot: System halted")


#: what the guest kernel prints when it panics (at KERN_EMERG: on the console whatever the level)
PANIC_MARK = b"Kernel panic - not syncing"


def guest_panicked(log: bytes) -> bool:
    """Whether the guest's last boot in the serial log ended in a panic."""
    return log.rfind(PANIC_MARK) > log.rfind(BOOT_MARK.encode())


def guest_ready(log: bytes) -> bool:
    """Whether the serial log says the guest is ready now: a ready mark after the last boot mark,
    the last panic and the last restart or power-off message (so not from the moment it reboots;
    a log without
    boot marks, from an older image, needs one ready mark)."""
    gone = max(log.rfind(BOOT_MARK.encode()), log.rfind(PANIC_MARK), *(log.rfind(m) for m in SHUTDOWN_MARKS))
    return log.rfind(READY_MARK.encode()) > gone


def build_initramfs(kernel: Kernel, busybox: Path = BUSYBOX) -> tuple[bytes, list[str]]:
    if not busybox.exists():
        raise ImageError(f"{busybox} missing: install busybox-static")
    modules = resolve_modules(kernel.modules, WANTED_MODULES, OPTIONAL_MODULES)
    a = Cpio()
    for d in ("bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "run", "root", "lib", "lib/modules"):
        a.directory(d)
    a.chardev("dev/console", 5, 1)
    a.chardev("dev/null", 1, 3, 0o666)
    a.file("bin/busybox", busybox.read_bytes(), 0o755)
    a.symlink("bin/sh", "busybox")
    a.file("init", INIT.encode(), 0o755)
    names = []
    for rel in modules:
        data = (kernel.modules / rel).read_bytes()
        name = Path(rel).name
        names.append(name)
        a.file(f"lib/modules/{name}", data)
    a.file("etc/modules", ("\n".join(names) + "\n").encode())
    a.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    a.file("etc/group", b"root:x:0:\n")
    return gzip.compress(a.finish(), compresslevel=6, mtime=0), names


def build_image(out_dir: Path, from_package: bool = False) -> Image:
    """Write ``vmlinuz``, ``initrd.img`` and ``image.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spp-vm-image-") as tmp:
        kernel = None if from_package else find_installed_kernel()
        if kernel is None:
            kernel = kernel_from_package(Path(tmp))
        initrd, names = build_initramfs(kernel)
        shutil.copyfile(kernel.vmlinuz, out_dir / "vmlinuz.tmp")
        (out_dir / "initrd.img.tmp").write_bytes(initrd)
    os.replace(out_dir / "vmlinuz.tmp", out_dir / "vmlinuz")
    os.replace(out_dir / "initrd.img.tmp", out_dir / "initrd.img")
    image = Image(out_dir, kernel.version, names)
    meta = {"kernel_version": kernel.version, "modules": names, "ready_mark": READY_MARK}
    (out_dir / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
    return image


def default_image_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "spp" / "vm-image"
