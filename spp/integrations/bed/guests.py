"""VMs and containers of a bed, through the tools that own them: ``spp vm``'s manager
(:mod:`spp.integrations.vm`) for VMs, sppc for containers. A VM's NICs are nfv ``vhost:N``
ports, so VMs start after the nfv ports exist and stop before they go.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from spp.engine.portid import parse_port_uid
from spp.integrations.bed.schema import Bed, Container, Vm


class GuestError(RuntimeError):
    """A VM or container that cannot be started; the message says why."""


def _vm_root(bed: Bed) -> Path:
    from spp.integrations.vm.manager import default_state_root

    return default_state_root(bed.file_prefix)


def vm_spec(bed: Bed, vm: Vm) -> Any:
    """The ``spp vm`` spec of a bed's VM (no file is looked at: dry runs use it too)."""
    from spp.integrations.vm import manager
    from spp.integrations.vm.image import default_image_dir
    from spp.integrations.vm.qemu import Nic, VmSpec, default_mac, vhost_socket

    vhost_dir = bed.primary.vhost_dir or "/tmp"
    owners = {p: s for s in bed.secondaries for p in s.ports}
    owners.update({p: s for s in bed.secondaries for c in s.components for p in (*c.rx, *c.tx)})
    nics = []
    for nic in vm.nics:
        dev = parse_port_uid(nic.port).num
        nics.append(Nic(dev, vhost_socket(dev, vhost_dir), nic.mac or default_mac(vm.id, dev), nic.ip))
    server = any(owners[n.port].vhost_client for n in vm.nics if n.port in owners)
    image = Path(vm.image) if vm.image else default_image_dir()
    return VmSpec(
        vm_id=vm.id,
        state_dir=manager.vm_dir(_vm_root(bed), vm.id),
        nics=nics,
        mem_mb=vm.mem,
        cores=vm.cores,
        accel="tcg" if vm.accel == "auto" else vm.accel,
        server=server,
        kernel=None if vm.hda else image / "vmlinuz",
        initrd=None if vm.hda else image / "initrd.img",
        hda=Path(vm.hda) if vm.hda else None,
        name=vm.name,
    )


def start_vm(bed: Bed, vm: Vm) -> int:
    from spp.integrations.vm import manager
    from spp.integrations.vm.qemu import resolve_accel

    spec = vm_spec(bed, vm)
    spec.accel = resolve_accel(vm.accel)
    if spec.hda is None and not (spec.kernel.exists() and spec.initrd.exists()):
        raise GuestError(f"vm {vm.id}: no guest image in {spec.kernel.parent}; build it with 'spp-vm image'")
    return int(manager.start(spec))


def stop_vm(bed: Bed, vm: Vm) -> None:
    from spp.integrations.vm import manager

    with contextlib.suppress(manager.VmError):
        manager.stop(_vm_root(bed), vm.id)


def vm_row(bed: Bed, vm: Vm) -> dict[str, Any]:
    from spp.integrations.vm import manager

    try:
        st = manager.status(_vm_root(bed), vm.id)
    except manager.VmError:
        st = {"pid": None, "state": "stopped", "serial_log": None}
    running = st["state"] == "running"
    return {
        "name": f"vm {vm.id}",
        "pid": st["pid"],
        "state": "running" if running else "exited",
        "restarts": 0,
        "uptime_s": st.get("uptime_s"),
        "log": st.get("serial_log"),
        "window": None,
    }


def _sppc() -> Any:
    try:
        from spp.integrations import containers
    except ImportError:
        raise GuestError(
            "containers need sppc (spp.integrations.containers), which is not installed"
        ) from None
    return containers


def sppc_available() -> bool:
    try:
        _sppc()
    except GuestError:
        return False
    return True


def container_name(bed: Bed, c: Container) -> str:
    return f"sppc-{bed.name}-{c.name}"


def sppc_words(bed: Bed, c: Container) -> list[str]:
    """The ``sppc app APP`` options of a bed's container: its cores, devices, name, image, and
    the bed's instance for SPP's own processes; then the container's own ``args``."""
    words = ["-l", c.lcores, "--name", container_name(bed, c), "--vhost-dir", bed.primary.vhost_dir or "/tmp"]
    if c.dev_uids:
        words += ["-d", ",".join(c.dev_uids)]
    if c.image:
        words += ["-ci", c.image]
    if c.engine:
        words += ["--engine", c.engine]
    if c.app.startswith("spp-") and c.app not in ("spp-pktgen", "spp-l2fwd"):
        port = bed.ctl.pri_port if c.app == "spp-primary" else bed.ctl.sec_port
        words += ["-ip", bed.ctl.host, "--ctl-port", str(port), "--file-prefix", bed.file_prefix]
    return [*words, *c.args]


def container_launch(bed: Bed, c: Container) -> Any:
    """sppc's launch of the container (its ``podman run``/``docker run``); no side effects."""
    sppc = _sppc()
    try:
        return sppc.build(c.app, sppc_words(bed, c), token=lambda n: "0" * (2 * n))
    except (sppc.SppcError, sppc.EngineError) as e:
        raise GuestError(f"container {c.name}: {e}") from None


def start_container(bed: Bed, c: Container, log_dir: Path) -> None:
    sppc = _sppc()
    launch = container_launch(bed, c)
    try:
        sppc.start(launch)
    except sppc.EngineError as e:
        raise GuestError(f"container {c.name}: {e}") from None


def stop_container(bed: Bed, c: Container) -> None:
    with contextlib.suppress(Exception):
        sppc = _sppc()
        sppc.stop(container_name(bed, c), container_launch(bed, c).engine)


def container_row(bed: Bed, c: Container) -> dict[str, Any]:
    state = "exited"
    with contextlib.suppress(Exception):
        sppc = _sppc()
        state = sppc.state(container_name(bed, c), container_launch(bed, c).engine)
    return {
        "name": f"container {c.name}",
        "pid": None,
        "state": "running" if state == "running" else "exited",
        "restarts": 0,
        "uptime_s": None,
        "log": None,
        "window": None,
    }
