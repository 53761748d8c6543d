"""spp_vf and spp_mirror brought to what etcd asks for, one idempotent step at a time.

Every step reads the live status and changes only what differs, so a sequence cut short (the
agent killed, spp-ctl gone, a secondary restarted) is finished by running it again from the
start; nothing relies on a cache of what was done before. The request sequences are the
original agent's (spec §3.4-3.7).
"""

from __future__ import annotations

import logging
from typing import Any

from spp.integrations.agent.keys import BindPort, TapInfo
from spp.integrations.agent.layout import Layout, Mirror, Vhost
from spp.integrations.agent.sppctl import Proc, SppCtl, components, ports_of, table_entries, vlan_of

log = logging.getLogger("spp.agent.dataplane")

#: one step of a tap's wiring: (attached when the tap is on?, process, port, direction, component)
_Step = tuple[bool, Proc, str, str, str]

NO_VLAN: dict[str, Any] = {"operation": "none"}
#: SPP 18.08's spp-ctl took ``classifier_mac`` (networking-spp's configurations say so); later
#: SPP and ours call it ``classifier``
_REST_TYPE = {"classifier_mac": "classifier"}


def _same_vlan(cur: dict[str, Any] | None, want: dict[str, Any]) -> bool:
    if cur is None:
        return False
    if cur.get("operation", "none") != want["operation"]:
        return False
    return want["operation"] != "add" or cur.get("id") == want["id"]


class DataPlane:
    def __init__(self, ctl: SppCtl, layout: Layout) -> None:
        self.ctl, self.layout = ctl, layout

    def vf(self, client_id: int) -> Proc:
        return self.ctl.vf(client_id)

    @property
    def mirror_proc(self) -> Proc:
        return self.ctl.mirror(self.layout.mirror_client_id)

    # -- the configured components -----------------------------------------------------------

    async def missing_components(self) -> list[str]:
        """Configured components not running (a secondary restarted, or never built)."""
        out = []
        for spec in self.layout.vfs:
            have = components(await self.vf(spec.client_id).status())
            out += [f"vf {spec.client_id} {c.name}" for c in spec.components if c.name not in have]
        if self.layout.mirrors:
            have = components(await self.mirror_proc.status())
            out += [f"mirror {m.name}" for m in self.layout.mirrors if m.name not in have]
        return out

    async def _mirror_held(self) -> set[tuple[str, str]]:
        """(port, dir) that spp_mirror's components hold: a tap moved them there, so spp_vf must
        not take them back (a ring has one producer and one consumer)."""
        if not self.layout.mirrors:
            return set()
        held = set()
        for comp in components(await self.mirror_proc.status()).values():
            held |= {(p, "rx") for p in ports_of(comp, "rx")} | {(p, "tx") for p in ports_of(comp, "tx")}
        return held

    async def build(self) -> int:
        """Create missing components and ports (§3.4); returns how many changes were made."""
        changes = 0
        held = await self._mirror_held()
        for spec in self.layout.vfs:
            proc = self.vf(spec.client_id)
            have = components(await proc.status())
            for comp in spec.components:
                cur = have.get(comp.name)
                if cur is None:
                    log.info("%s: starting %s %s on core %d", proc, comp.type, comp.name, comp.core)
                    await proc.start(comp.name, comp.core, _REST_TYPE.get(comp.type, comp.type))
                    changes += 1
                    wanted_tx, wanted_rx = list(comp.tx), list(comp.rx)
                else:
                    if cur.get("type") != _REST_TYPE.get(comp.type, comp.type):
                        log.warning(
                            "%s: %s is a %s, configured %s", proc, comp.name, cur.get("type"), comp.type
                        )
                    wanted_tx, wanted_rx = self._missing_ports(comp.type, comp.tx, comp.rx, cur)
                for port in wanted_tx:
                    if (port, "tx") not in held and port not in ports_of(cur, "tx"):
                        await proc.attach(port, "tx", comp.name)
                        changes += 1
                for port in wanted_rx:
                    if (port, "rx") not in held and port not in ports_of(cur, "rx"):
                        await proc.attach(port, "rx", comp.name)
                        changes += 1
        if self.layout.mirrors:
            have = components(await self.mirror_proc.status())
            for m in self.layout.mirrors:
                if m.name not in have:  # ports come with taps only
                    log.info("%s: starting mirror %s on core %d", self.mirror_proc, m.name, m.core)
                    await self.mirror_proc.start(m.name, m.core, "mirror")
                    changes += 1
        return changes

    @staticmethod
    def _missing_ports(
        kind: str, tx: tuple[str, ...], rx: tuple[str, ...], cur: dict[str, Any]
    ) -> tuple[list[str], list[str]]:
        """The original's rules for an existing component: a classifier gets every configured tx
        port and its rx; a forwarder or a merge into a vhost gets its first port back only when it
        has none (TaaS may have moved it); a merge towards the NIC gets every configured rx."""
        cur_tx, cur_rx = ports_of(cur, "tx"), ports_of(cur, "rx")
        to_vhost = any(p.startswith("vhost:") for p in tx)
        if kind == "classifier_mac":
            return list(tx), ([] if cur_rx else list(rx[:1]))
        if kind == "merge" and not to_vhost:
            return ([] if cur_tx else list(tx[:1])), list(rx)
        return ([] if cur_tx else list(tx[:1])), ([] if cur_rx else list(rx[:1]))

    # -- ports -------------------------------------------------------------------------------

    async def _set_vlan(
        self, proc: Proc, st: dict[str, Any], comp: str, port: str, direction: str, want: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Bring the VLAN operation of ``port`` to ``want``, judged on the status ``st``; the
        new status if anything changed, None if nothing had to."""
        cur = vlan_of(components(st).get(comp), port, direction)
        if _same_vlan(cur, want):
            return None
        if cur is not None:
            await proc.detach(port, direction, comp)
        await proc.attach(port, direction, comp, None if want["operation"] == "none" else want)
        return await proc.status()

    async def plug(self, vh: Vhost, bp: BindPort) -> bool:
        """Frames for ``bp.mac`` (in ``bp.vlan_id``) to the vhost, its frames out tagged; True
        if anything had to change. The status is read again only after a change, so a plug
        of a fresh port costs one read and one write."""
        proc = self.vf(vh.client_id)
        want = (bp.mac, bp.vlan_id)
        changed = False
        st = await proc.status()
        for mac, vid in table_entries(st, vh.del_vlan_port):
            if (mac, vid) != want:  # left by a port that was never unplugged
                log.warning("%s: removing stale entry %s vlan %s on %s", proc, mac, vid, vh.del_vlan_port)
                await proc.table("del", mac, vh.del_vlan_port, vid)
                changed = True
        if changed:
            st = await proc.status()
        if bp.vlan_id is None:
            push, strip = NO_VLAN, NO_VLAN
        else:
            push, strip = {"operation": "add", "id": bp.vlan_id, "pcp": 0}, {"operation": "del"}
        for comp, port, direction, op in (
            (vh.add_vlan_comp, vh.add_vlan_port, "rx", push),
            (vh.del_vlan_comp, vh.del_vlan_port, "tx", strip),
        ):
            new = await self._set_vlan(proc, st, comp, port, direction, op)
            if new is not None:
                st, changed = new, True
        if want not in table_entries(st, vh.del_vlan_port):
            await proc.table("add", bp.mac, vh.del_vlan_port, bp.vlan_id)
            changed = True
        return changed

    async def unplug(self, vh: Vhost) -> bool:
        """No entry towards the vhost, no VLAN operation on its rings."""
        proc = self.vf(vh.client_id)
        changed = False
        st = await proc.status()
        for mac, vid in table_entries(st, vh.del_vlan_port):
            await proc.table("del", mac, vh.del_vlan_port, vid)
            changed = True
        if changed:
            st = await proc.status()
        for comp, port, direction in (
            (vh.add_vlan_comp, vh.add_vlan_port, "rx"),
            (vh.del_vlan_comp, vh.del_vlan_port, "tx"),
        ):
            new = await self._set_vlan(proc, st, comp, port, direction, NO_VLAN)
            if new is not None:
                st, changed = new, True
        return changed

    # -- TaaS (spp_mirror) -------------------------------------------------------------------

    async def _has(self, proc: Proc, port: str, direction: str, comp: str) -> bool:
        return port in ports_of(components(await proc.status()).get(comp), direction)

    async def _add(self, proc: Proc, port: str, direction: str, comp: str) -> None:
        if not await self._has(proc, port, direction, comp):
            await proc.attach(port, direction, comp)

    async def _del(self, proc: Proc, port: str, direction: str, comp: str) -> None:
        if await self._has(proc, port, direction, comp):
            await proc.detach(port, direction, comp)

    def tap_parts(self, tap: TapInfo, src: Vhost, dst: Vhost) -> list[str]:
        """What keeps this tap from being wired (empty when it can be)."""
        problems = []
        for mid in (tap.mirror_in, tap.mirror_out):
            if mid is not None and not 0 <= mid < len(self.layout.mirrors):
                problems.append(f"mirror {mid} is not configured")
        for vh in (src, dst):
            if vh.in_comp is None or vh.out_comp is None:
                problems.append(f"vhost:{vh.vhost_id} has no forwarders (TaaS needs them)")
        return problems

    def _tap_in_steps(self, m: Mirror, src: Vhost, dst: Vhost) -> list[_Step]:
        """IN: what the classifier sends the source VM goes through the mirror, which gives one
        copy back to the source's forwarder and one to the service's."""
        mp, sp, dp = self.mirror_proc, self.vf(src.client_id), self.vf(dst.client_id)
        assert src.in_comp and src.in_ring and dst.in_comp
        return [
            (True, dp, m.ring_a, "rx", dst.in_comp),
            (True, mp, m.ring_a, "tx", m.name),
            (True, sp, m.ring_b, "rx", src.in_comp),
            (True, mp, m.ring_b, "tx", m.name),
            (False, sp, src.in_ring, "rx", src.in_comp),
            (True, mp, src.in_ring, "rx", m.name),
        ]

    def _tap_out_steps(self, m: Mirror, src: Vhost, dst: Vhost) -> list[_Step]:
        """OUT: what the source VM sends goes to the mirror, which gives one copy back on the
        way to the merger and one to the service's forwarder."""
        mp, sp, dp = self.mirror_proc, self.vf(src.client_id), self.vf(dst.client_id)
        assert src.out_comp and src.out_ring and dst.in_comp
        return [
            (True, dp, m.ring_a, "rx", dst.in_comp),
            (True, mp, m.ring_a, "tx", m.name),
            (False, sp, src.out_ring, "tx", src.out_comp),
            (True, mp, src.out_ring, "tx", m.name),
            (True, mp, m.ring_b, "rx", m.name),
            (True, sp, m.ring_b, "tx", src.out_comp),
        ]

    async def tap(self, tap: TapInfo, src: Vhost, dst: Vhost, on: bool) -> None:
        """Wire (``on``) or unwire a tap flow: IN then OUT, each in its order, to wire; to
        unwire, every step undone in the reverse order, so a ring always has one producer and
        one consumer and an interrupted sequence is finished by running it again."""
        steps: list[_Step] = []
        if tap.mirror_in is not None:
            steps += self._tap_in_steps(self.layout.mirrors[tap.mirror_in], src, dst)
        if tap.mirror_out is not None:
            steps += self._tap_out_steps(self.layout.mirrors[tap.mirror_out], src, dst)
        for attach, proc, port, direction, comp in steps if on else reversed(steps):
            if attach == on:
                await self._add(proc, port, direction, comp)
            else:
                await self._del(proc, port, direction, comp)

    async def untap_mirror(self, m: Mirror) -> int:
        """Take down whatever tap wiring mirror ``m`` has when no tap flow accounts for it (its
        keys are gone, so which ports it joined is read from the live status): every port off
        the mirror component, its two rings off spp_vf's components (they are never part of
        the configuration); :meth:`build` then gives the forwarders their own rings back.
        Returns how many ports were detached."""
        changes = 0
        mp = self.mirror_proc
        comp = components(await mp.status()).get(m.name)
        for direction in ("rx", "tx"):
            for port in ports_of(comp, direction):
                await mp.detach(port, direction, m.name)
                changes += 1
        for spec in self.layout.vfs:
            proc = self.vf(spec.client_id)
            have = components(await proc.status())
            for c in spec.components:
                for direction, configured in (("rx", c.rx), ("tx", c.tx)):
                    for ring in (m.ring_a, m.ring_b):
                        if ring not in configured and ring in ports_of(have.get(c.name), direction):
                            await proc.detach(ring, direction, c.name)
                            changes += 1
        if changes:
            log.warning("%s: took down the wiring of a tap flow that is gone (%d port(s))", m.name, changes)
        return changes
