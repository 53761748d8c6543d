"""``spp-vm`` (also ``vm ...`` in SPP's shell): start, stop, inspect and use VMs on vhost ports.

::

    spp-vm image [-o DIR]                        build the small guest (kernel + busybox initramfs)
    spp-vm start ID -d 1,2 [--ip 10.0.0.1/24 ...] [--vhost-client] [--accel auto|kvm|tcg] [--dry-run]
                                                 (--no-reboot: a reboot in the guest ends QEMU)
    spp-vm exec ID CMD...                        run CMD in the guest's shell (serial console)
    spp-vm status ID | list                      what runs, with its NICs and sockets
    spp-vm stop ID                               quit QEMU and remove the VM's state dir
    spp-vm ssh ID|NAME|ADDR [CMD...]             log in (ssh if the guest has it, else its console)
    spp-vm ctl start|stop|restart|status [all|switch|vm|app] -f FILE
                                                 switch, VM and app in the VM, in order (lwaftrctl)

``-d`` takes SPP's ``vhost:N`` ids ("1,3-5"); NIC *i* gets ``/tmp/sockN`` and MAC
``00:AD:BE:B4:<ID>:<N>`` unless ``--mac`` says otherwise, as SPP's VM launcher did.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from spp.integrations.vm import manager
from spp.integrations.vm.image import ImageError, build_image, default_image_dir
from spp.integrations.vm.lifecycle import LifecycleError
from spp.integrations.vm.manager import VmError, default_state_root
from spp.integrations.vm.qemu import (
    DEFAULT_ON_PANIC,
    PANIC_ACTIONS,
    QEMU,
    Nic,
    VmSpec,
    VmSpecError,
    default_mac,
    qemu_argv,
    resolve_accel,
    shell_words,
    vhost_socket,
)


def parse_ids(text: str) -> list[int]:
    """``1,3-5`` -> [1, 3, 4, 5] (vm-launcher's -d syntax)."""
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            ids = range(int(lo), int(hi) + 1) if sep else [int(lo)]
            out.extend(i for i in ids if i not in out)
    except ValueError:
        raise VmSpecError(f"invalid device ids '{text}': expected e.g. 1,3-5") from None
    if not out or min(out) < 0:
        raise VmSpecError(f"invalid device ids '{text}'")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spp-vm",
        description="VMs with vhost-user NICs on SPP's vhost:N ports (QEMU), and a small guest image.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(__doc__ or "").split("::", 1)[-1],
    )
    p.add_argument("--file-prefix", help="the SPP instance (default $SPP_FILE_PREFIX or 'spp')")
    p.add_argument("--state-dir", type=Path, help="where VM state lives (default /tmp/spp-<prefix>/vm)")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    s = sub.add_parser("start", help="start a VM")
    s.add_argument("id", type=int, help="VM id (0..99)")
    s.add_argument("-d", "--dev-ids", default="", help="vhost:N ids of its NICs, e.g. 1,2 or 1-3")
    s.add_argument("--mac", action="append", default=[], help="MAC of the next NIC (repeatable)")
    s.add_argument("--ip", action="append", default=[], help="ADDR/PREFIX of the next NIC in the guest")
    s.add_argument("-m", "--mem", type=int, default=256, help="memory in MiB (default %(default)s)")
    s.add_argument("-c", "--cores", type=int, default=1, help="vCPUs (default %(default)s)")
    s.add_argument("--accel", default="auto", help="auto (KVM if usable), kvm or tcg")
    s.add_argument(
        "--vhost-client",
        action="store_true",
        help="SPP's vhost ports are clients (spp_nfv --vhost-client): QEMU is the socket server",
    )
    s.add_argument("--vhost-dir", default="/tmp", help="directory of SPP's sockN (its --vhost-dir)")
    s.add_argument("--image", type=Path, help="guest from 'spp vm image' (default: the cache dir)")
    s.add_argument("--kernel", type=Path, help="guest kernel (instead of --image)")
    s.add_argument("--initrd", type=Path, help="guest initramfs (with --kernel)")
    s.add_argument("--hda", type=Path, help="boot a disk image instead, as SPP's recipes do")
    s.add_argument("--hugepages", help="back guest memory with files in this hugetlbfs mount")
    s.add_argument("--append", default="", help="extra kernel command line")
    s.add_argument("--name", help="guest host name (default spp-vm<ID>)")
    s.add_argument(
        "--nic-opt",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="virtio-net-pci property for every NIC, e.g. guest_tso4=off (repeatable)",
    )
    s.add_argument(
        "--no-reboot",
        action="store_true",
        help="a reboot in the guest ends QEMU instead of resetting the VM",
    )
    s.add_argument(
        "--on-panic",
        choices=tuple(PANIC_ACTIONS),
        default=DEFAULT_ON_PANIC,
        help="what a panic in the guest does: stop ends QEMU (default), pause keeps the VM stopped "
        "for inspection, reboot resets it (a guest that panics at every boot then loops)",
    )
    s.add_argument("--qemu", default=QEMU, help="QEMU binary (default %(default)s)")
    s.add_argument("--dry-run", action="store_true", help="print the QEMU command and start nothing")
    s.add_argument("--wait", action="store_true", help="return only once the guest is ready")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds for --wait (default %(default)s)")

    x = sub.add_parser("exec", help="run a command in the guest (serial console)")
    x.add_argument("id", type=int)
    x.add_argument("--timeout", type=float, default=60.0, help="seconds (default %(default)s)")
    x.add_argument("command", nargs=argparse.REMAINDER, help="the command line")

    for name, text in (("stop", "stop a VM"), ("status", "show one VM")):
        a = sub.add_parser(name, help=text)
        a.add_argument("id", type=int)
        if name == "status":
            a.add_argument("--json", action="store_true")
    ls = sub.add_parser("list", help="list the VMs of this instance")
    ls.add_argument("--json", action="store_true")

    sh = sub.add_parser("ssh", help="log into a VM found by id, name or address (sppsh)")
    sh.add_argument("vm", help="VM id, guest name, NIC address or MAC")
    sh.add_argument("-u", "--user", help="ssh user")
    sh.add_argument("--serial", action="store_true", help="use the serial console even if ssh answers")
    sh.add_argument("command", nargs=argparse.REMAINDER, help="run this instead of a login")
    ct = sub.add_parser("ctl", help="start/stop/restart the switch, the VM and its app in order")
    ct.add_argument("words", nargs="+", metavar="ACTION [TARGET]", help="e.g. start all, restart vm")
    ct.add_argument("-f", "--file", type=Path, default=Path("lifecycle.yml"), help="(default %(default)s)")

    im = sub.add_parser("image", help="build the guest kernel + initramfs")
    im.add_argument("-o", "--output", type=Path, help="output dir (default ~/.cache/spp/vm-image)")
    im.add_argument(
        "--from-package", action="store_true", help="download linux-image-amd64 instead of using /boot"
    )
    return p


def make_spec(args: argparse.Namespace, root: Path) -> VmSpec:
    if not 0 <= args.id <= 99:
        raise VmSpecError(f"invalid VM id {args.id} (0..99)")
    if args.mem < 64 or args.cores < 1:
        raise VmSpecError("--mem must be at least 64 (MiB) and --cores at least 1")
    ids = parse_ids(args.dev_ids) if args.dev_ids else []
    if len(args.mac) > len(ids) or len(args.ip) > len(ids):
        raise VmSpecError(f"{len(ids)} NIC(s) (-d) but {len(args.mac)} --mac and {len(args.ip)} --ip")
    nics = []
    for i, dev in enumerate(ids):
        mac = args.mac[i] if i < len(args.mac) else default_mac(args.id, dev)
        address = args.ip[i] if i < len(args.ip) else None
        nics.append(Nic(dev, vhost_socket(dev, args.vhost_dir), mac, address))
    kernel, initrd = args.kernel, args.initrd
    if args.hda is None and kernel is None:
        image = args.image or default_image_dir()
        kernel, initrd = image / "vmlinuz", image / "initrd.img"
    if kernel is not None and initrd is None:
        raise VmSpecError("--kernel needs --initrd")
    return VmSpec(
        vm_id=args.id,
        state_dir=manager.vm_dir(root, args.id),
        nics=nics,
        mem_mb=args.mem,
        cores=args.cores,
        accel=resolve_accel(args.accel),
        server=args.vhost_client,
        kernel=kernel if args.hda is None else None,
        initrd=initrd if args.hda is None else None,
        hda=args.hda,
        hugepages=args.hugepages,
        append=args.append,
        qemu=args.qemu,
        name=args.name,
        nic_options=args.nic_opt,
        reboot=not args.no_reboot,
        on_panic=args.on_panic,
    )


def _print_status(st: dict[str, Any]) -> None:
    panicked = ", the guest panicked (see its serial log)" if st.get("panicked") else ""
    pid = f", pid {st['pid']}" if st["pid"] else ""
    print(f"vm {st['id']} ({st['name']}): {st['state']}{pid}{panicked}")
    print(
        f"  accel {st['accel']}, {st['mem_mb']} MiB, vhost {st['vhost_mode']}, "
        f"guest ready: {st['guest_ready']}"
    )
    for n in st["nics"]:
        print(
            f"  {n['port']}: {n['socket']} mac {n['mac']}" + (f" ip {n['address']}" if n["address"] else "")
        )
    print(f"  serial {st['serial']} (log {st['serial_log']})")


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    root = args.state_dir or default_state_root(args.file_prefix)
    if args.action == "image":
        out = args.output or default_image_dir()
        img = build_image(out, from_package=args.from_package)
        size = (img.vmlinuz.stat().st_size + img.initrd.stat().st_size) / 1e6
        print(f"guest image in {out}: kernel {img.kernel_version}, {len(img.modules)} modules, {size:.1f} MB")
        return 0
    if args.action == "start":
        spec = make_spec(args, root)
        if args.dry_run:
            print(shell_words(qemu_argv(spec)))
            return 0
        pid = manager.start(spec)
        print(f"vm {spec.vm_id}: QEMU pid {pid} ({spec.accel}), serial {spec.serial_socket}")
        if args.wait:
            manager.exec_in(root, spec.vm_id, "true", timeout=args.timeout, boot_timeout=args.timeout)
            print(f"vm {spec.vm_id}: guest ready")
        return 0
    if args.action == "exec":
        words = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not words:
            raise VmSpecError("exec needs a command")
        # One word is taken as a whole command line ("ping -c 1 x"); several are quoted back.
        line = words[0] if len(words) == 1 else shlex.join(words)
        res = manager.exec_in(root, args.id, line, timeout=args.timeout)
        sys.stdout.write(res.output)
        sys.stdout.flush()
        return res.status
    if args.action == "ssh":
        from spp.integrations.vm.login import ssh

        words = args.command[1:] if args.command[:1] == ["--"] else args.command
        return ssh(root, args.vm, words, user=args.user, serial=args.serial)
    if args.action == "ctl":
        from spp.integrations.vm import lifecycle

        return lifecycle.run(args.file, args.words)
    if args.action == "stop":
        was = manager.stop(root, args.id)
        print(f"vm {args.id}: {'stopped' if was else 'was not running; state removed'}")
        return 0
    if args.action == "status":
        st = manager.status(root, args.id)
        if args.json:
            print(json.dumps(st, indent=2))
        else:
            _print_status(st)
        return 0
    vms = manager.list_vms(root)
    if args.json:
        print(json.dumps(vms, indent=2))
    elif not vms:
        print(f"no VMs under {root}")
    for st in [] if args.json else vms:
        _print_status(st)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except (VmError, VmSpecError, ImageError, LifecycleError) as e:
        print(f"spp-vm: error: {e}", file=sys.stderr)
        return 1


def run_from_shell(arg: str) -> None:
    """``vm ...`` typed in SPP's shell: same commands, errors reported as the shell's own."""
    from spp.control.cli.common import CliError

    try:
        words = shlex.split(arg)
    except ValueError as e:
        raise CliError(f"vm: {e}") from None
    try:
        status = run(words)
    except SystemExit as e:  # argparse: usage already printed
        if e.code not in (0, None):
            raise CliError("vm: invalid arguments (see 'vm -h')") from None
        return
    except (VmError, VmSpecError, ImageError, LifecycleError) as e:
        raise CliError(f"vm: {e}") from None
    if status:
        raise CliError(f"vm: exit status {status}")


if __name__ == "__main__":
    sys.exit(main())
