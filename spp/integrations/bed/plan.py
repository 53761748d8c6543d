"""From one bed to another by the smallest set of changes, as Snabb's ``engine.configure`` does
for an app network: compare the old description with the new one and list only the steps that
differ, in an order that never pulls a port out from under something still using it.

``plan(None, bed)`` brings a bed up, ``plan(bed, None)`` takes it down, ``plan(old, new)`` moves a
running bed. A process whose command line would change (lcores, kind, options) is restarted; one
whose wiring changes (ports, patches, components, classifier entries, forwarding) keeps running
and is sent only the REST calls for the difference, so its other ports keep counting. A change
to spp-ctl or the primary restarts the whole bed, since everything hangs on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spp.integrations.bed.schema import Bed, Component, Container, Namespace, Secondary, Vm

# Phases, in the order steps run.
STOP_CONTAINERS, STOP_VMS, UNWIRE, STOP_SECONDARIES, STOP_CORE, DEL_NS = range(6)
ADD_NS, START_CORE, START_SECONDARIES, ADD_PORTS, START_VMS, START_CONTAINERS, WIRE = range(6, 13)


@dataclass(frozen=True)
class Step:
    phase: int
    text: str  # what it does, as shown to people ("nfv 1: patch ring:0 -> phy:1")
    op: str  # what the executor does: "rest", "start", "stop", "ns-add", "vm-start"...
    args: tuple[Any, ...] = field(default=())


def _rest(phase: int, text: str, method: str, path: str, body: Any = None) -> Step:
    return Step(phase, text, "rest", (method, path, body))


def _core_changed(old: Bed, new: Bed) -> bool:
    return (old.ctl, old.primary, old.file_prefix) != (new.ctl, new.primary, new.file_prefix)


def _process_key(sec: Secondary) -> tuple[Any, ...]:
    """What is on the secondary's command line: a change restarts it."""
    return (sec.kind, sec.lcores, sec.vhost_client, tuple(sec.args), sec.port, sec.out_dir)


def plan(old: Bed | None, new: Bed | None) -> list[Step]:
    if old is not None and new is not None and _core_changed(old, new):
        steps = plan(old, None) + plan(None, new)
        return [Step(-1, "spp-ctl or the primary changed: the whole bed restarts", "note"), *steps]
    steps: list[Step] = []
    if old is None and new is not None:
        steps += [
            Step(START_CORE, "start spp-ctl", "start-ctl"),
            Step(START_CORE, "start primary", "start-primary"),
        ]
    if new is None and old is not None:
        steps += [
            Step(STOP_CORE, "stop primary", "stop-primary"),
            Step(STOP_CORE, "stop spp-ctl", "stop-ctl"),
        ]
    steps += _namespaces(old, new)
    steps += _secondaries(old, new)
    steps += _by_key(old, new, "vms", lambda v: v.id, _vm_steps)
    steps += _by_key(old, new, "containers", lambda c: c.name, _container_steps)
    return sorted(steps, key=lambda s: s.phase)


def _by_key(old: Bed | None, new: Bed | None, section: str, key: Any, make: Any) -> list[Step]:
    before = {key(x): x for x in (getattr(old, section) if old else [])}
    after = {key(x): x for x in (getattr(new, section) if new else [])}
    steps: list[Step] = []
    for k, item in before.items():
        if after.get(k) != item:
            steps += make(item, start=False)
    for k, item in after.items():
        if before.get(k) != item:
            steps += make(item, start=True)
    return steps


def _vm_steps(vm: Vm, start: bool) -> list[Step]:
    if start:
        return [Step(START_VMS, f"start vm {vm.id}", "vm-start", (vm,))]
    return [Step(STOP_VMS, f"stop vm {vm.id}", "vm-stop", (vm,))]


def _container_steps(c: Container, start: bool) -> list[Step]:
    if start:
        return [Step(START_CONTAINERS, f"start container {c.name}", "container-start", (c,))]
    return [Step(STOP_CONTAINERS, f"stop container {c.name}", "container-stop", (c,))]


def _namespaces(old: Bed | None, new: Bed | None) -> list[Step]:
    def make(ns: Namespace, start: bool) -> list[Step]:
        if start:
            return [Step(ADD_NS, f"create namespace {ns.name} ({ns.outer} <-> {ns.inner})", "ns-add", (ns,))]
        return [Step(DEL_NS, f"remove namespace {ns.name}", "ns-del", (ns,))]

    return _by_key(old, new, "namespaces", lambda n: n.name, make)


def _secondaries(old: Bed | None, new: Bed | None) -> list[Step]:
    before = {s.name: s for s in (old.secondaries if old else [])}
    after = {s.name: s for s in (new.secondaries if new else [])}
    steps: list[Step] = []
    for name in reversed(list(before)):  # stopped in reverse order of the file
        if name not in after or _process_key(before[name]) != _process_key(after[name]):
            steps.append(Step(STOP_SECONDARIES, f"stop {name}", "stop-secondary", (name,)))
    for name, sec in after.items():
        prev = before.get(name)
        if prev is None or _process_key(prev) != _process_key(sec):
            steps.append(Step(START_SECONDARIES, f"start {name}", "start-secondary", (name,)))
            prev = None  # a new process: all its wiring is new
        steps += wiring(prev, sec)
    return steps


def wiring(old: Secondary | None, new: Secondary) -> list[Step]:
    """REST calls that take secondary ``new``'s wiring from ``old``'s (None: a fresh process)."""
    if new.kind == "nfv":
        return _nfv(old, new)
    if new.kind in ("vf", "mirror"):
        return _worker(old, new)
    return _pcap(old, new)


def _nfv(old: Secondary | None, new: Secondary) -> list[Step]:
    base, who = f"/v1/nfvs/{new.id}", new.name
    old_ports = list(old.ports) if old else []
    old_patches = {p.src: p.dst for p in old.patches} if old else {}
    new_patches = {p.src: p.dst for p in new.patches}
    steps: list[Step] = []
    dels = [p for p in old_ports if p not in new.ports]
    for port in dels:
        steps.append(
            _rest(UNWIRE, f"{who}: del {port}", "PUT", f"{base}/ports", {"action": "del", "port": port})
        )
    # What is left patched once the ports are gone (del takes a port's patches with it).
    left = {s: d for s, d in old_patches.items() if s not in dels and d not in dels}
    dropped = [s for s in left if s not in new_patches]
    if dropped:
        # nfv can only drop all patches at once; the others are put back at once, and what
        # arrives meanwhile waits in its port's queue.
        steps.append(
            _rest(UNWIRE, f"{who}: patch reset (to drop {', '.join(dropped)})", "DELETE", f"{base}/patches")
        )
        left = {}
    for port in new.ports:
        if port not in old_ports:
            body = {"action": "add", "port": port}
            steps.append(_rest(ADD_PORTS, f"{who}: add {port}", "PUT", f"{base}/ports", body))
    for src, dst in new_patches.items():
        if left.get(src) != dst:
            body = {"src": src, "dst": dst}
            steps.append(_rest(WIRE, f"{who}: patch {src} -> {dst}", "PUT", f"{base}/patches", body))
    was_forwarding = bool(old and old.forward)
    if new.forward != was_forwarding:
        action = "start" if new.forward else "stop"
        steps.append(_rest(WIRE, f"{who}: forward {action}", "PUT", f"{base}/forward", {"action": action}))
    return steps


def _comp_key(c: Component) -> tuple[Any, ...]:
    return (c.type, c.core, tuple(c.rx), tuple(c.tx))


def _worker(old: Secondary | None, new: Secondary) -> list[Step]:
    base, who = f"/v1/{new.kind}s/{new.id}", new.name
    before = {c.name: c for c in (old.components if old else [])}
    after = {c.name: c for c in new.components}
    steps: list[Step] = []
    old_entries = {(e.mac, e.port, e.vlan) for e in (old.classifier_table if old else [])}
    new_entries = {(e.mac, e.port, e.vlan) for e in new.classifier_table}
    for mac, port, vlan in sorted(old_entries - new_entries, key=str):
        steps.append(_table(UNWIRE, who, base, "del", mac, port, vlan))
    for name, comp in before.items():
        if name not in after or (comp.type, comp.core) != (after[name].type, after[name].core):
            steps.append(
                _rest(UNWIRE, f"{who}: component stop {name}", "DELETE", f"{base}/components/{name}")
            )
    for name, comp in after.items():
        prev = before.get(name)
        if prev is not None and (prev.type, prev.core) != (comp.type, comp.core):
            prev = None
        if prev is None:
            body = {"name": name, "core": comp.core, "type": comp.type}
            steps.append(
                _rest(ADD_PORTS, f"{who}: component start {name}", "POST", f"{base}/components", body)
            )
        elif _comp_key(prev) == _comp_key(comp):
            continue
        for direction in ("rx", "tx"):
            had = list(getattr(prev, direction)) if prev else []
            want = list(getattr(comp, direction))
            if had != want[: len(had)]:  # order matters (classifier and merge): attach again in order
                for port in had:
                    steps.append(_attach(UNWIRE, who, base, name, port, direction, "detach"))
                had = []
            for port in want[len(had) :]:
                steps.append(_attach(ADD_PORTS, who, base, name, port, direction, "attach"))
    for mac, port, vlan in sorted(new_entries - old_entries, key=str):
        steps.append(_table(WIRE, who, base, "add", mac, port, vlan))
    return steps


def _attach(phase: int, who: str, base: str, name: str, port: str, direction: str, action: str) -> Step:
    body = {"action": action, "port": port, "dir": direction}
    text = f"{who}: port {'add' if action == 'attach' else 'del'} {port} {direction} {name}"
    return _rest(phase, text, "PUT", f"{base}/components/{name}/ports", body)


def _table(phase: int, who: str, base: str, action: str, mac: str, port: str, vlan: int | None) -> Step:
    body: dict[str, Any] = {"action": action, "type": "mac", "mac_address": mac, "port": port}
    text = f"{who}: classifier_table {action} mac {mac} {port}"
    if vlan is not None:
        body.update(type="vlan", vlan=vlan)
        text = f"{who}: classifier_table {action} vlan {vlan} {mac} {port}"
    return _rest(phase, text, "PUT", f"{base}/classifier_table", body)


def _pcap(old: Secondary | None, new: Secondary) -> list[Step]:
    was = bool(old and old.capture)
    if new.capture == was:
        return []
    action = "start" if new.capture else "stop"
    phase = WIRE if new.capture else UNWIRE
    body = {"action": action}
    return [_rest(phase, f"{new.name}: capture {action}", "PUT", f"/v1/pcaps/{new.id}/capture", body)]
