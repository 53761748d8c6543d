"""The agent of one compute host: etcd's requests for that host carried out on its spp_vf and
spp_mirror through spp-ctl.

Level-triggered: a watch event only says "look at port P" (or tap flow T); the worker reads the
keys as they are now and brings the data plane to them, step by idempotent step, then records
the outcome in ``port_status``/``tap_status`` (plug) or deletes the request's keys in one
transaction (unplug). Replaying a request is therefore harmless, which is what makes every
recovery path simple: at start, after a compaction, after a secondary or spp-ctl restarted,
every pending request is looked at again.

A session is one connection to one etcd member: read the configuration, reconcile, watch
``action/<host>/``, ``tap_action/<host>/`` and the configuration from the revision last seen,
keep the liveness lease, and check the data plane every few seconds. Losing the member ends the
session; the next one uses the next member, after a back-off, and resumes the watches where they
stopped (or reads everything again if etcd compacted that history).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from spp.integrations.agent import keys
from spp.integrations.agent.dataplane import DataPlane
from spp.integrations.agent.etcd import Compacted, Etcd, EtcdUnavailable
from spp.integrations.agent.keys import BadValue, BindPort, TapInfo
from spp.integrations.agent.layout import Layout, Vhost, parse_configuration
from spp.integrations.agent.sppctl import SppCtl, SppCtlError, SppCtlUnavailable

log = logging.getLogger("spp.agent")

LEASE_TTL = 10
HEARTBEAT = 3.0
HEALTH_INTERVAL = 2.0
MAX_BACKOFF = 5.0
#: how long a mirror claim whose tap flow has no keys is kept before it is freed: the TaaS driver
#: claims a mirror, then writes the flow's keys (milliseconds later), so an orphan younger than
#: this may be a flow being created
CLAIM_GRACE = 30.0
#: a request spp-ctl refuses is tried this many times (a secondary may be half rebuilt) before
#: it is given up, logged, and left without a status
MAX_REFUSALS = 3


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


class NotReady(RuntimeError):
    """The host has no usable configuration in etcd yet."""


@dataclass
class Stats:
    """What the agent did, for its log and the tests."""

    plugged: int = 0
    unplugged: int = 0
    taps_plugged: int = 0
    taps_unplugged: int = 0
    skipped: int = 0
    rebuilds: int = 0
    sessions: int = 0
    claims_freed: int = 0


@dataclass(order=True)
class _Work:
    kind: str  # "port" or "tap"
    ident: str


@dataclass
class _Queue:
    """Port and tap ids to look at, each at most once in the queue; ``later`` holds ids to
    retry after spp-ctl failed."""

    items: list[_Work] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    refusals: dict[_Work, int] = field(default_factory=dict)

    def add(self, work: _Work) -> None:
        if work not in self.items:
            self.items.append(work)
        self.event.set()

    async def take(self) -> _Work:
        while not self.items:
            self.event.clear()
            await self.event.wait()
        # taps after ports: a port's unplug takes its taps down first anyway
        self.items.sort(key=lambda w: w.kind != "port")
        return self.items.pop(0)


class Agent:
    def __init__(self, host: str, etcd: Etcd, api: str, claim_grace: float = CLAIM_GRACE) -> None:
        if not host or "/" in host:
            raise ValueError(f"bad host name {host!r}")
        self.host, self.etcd, self.api = host, etcd, api
        self.claim_grace = claim_grace
        #: mirror claims seen naming a tap flow without keys: key -> (mod_revision, first seen)
        self._orphans: dict[str, tuple[int, float]] = {}
        self.ctl = SppCtl(api)
        self.layout: Layout | None = None
        self.config_text: str | None = None
        self.queue = _Queue()
        self.stats = Stats()
        #: per watched prefix, the last revision seen; 0 = read everything again
        self.revisions: dict[str, int] = {}
        self.needs_rebuild = True
        self._ready_logged = False
        #: held while the data plane is changed: by one request, or by a rebuild
        self._busy = asyncio.Lock()
        #: the lease of ``agent/<host>`` in this session, revoked when the agent stops
        self._lease: Any = None

    # -- keys of this host -------------------------------------------------------------------

    def k(self, kind: str, ident: str | int) -> str:
        return keys.key(kind, self.host, ident)

    @property
    def watched(self) -> list[str]:
        return [
            keys.host_prefix("action", self.host),
            keys.host_prefix("tap_action", self.host),
            keys.configuration_key(self.host),
        ]

    # -- main loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        try:
            while not stop.is_set():
                session = asyncio.create_task(self._session())
                stopper = asyncio.create_task(stop.wait())
                started = time.monotonic()
                done, _ = await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if session not in done:
                    session.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await session
                    break
                try:
                    session.result()
                except EtcdUnavailable as e:
                    log.warning("%s; reconnecting in %.1f s", e, backoff)
                    await self.etcd.failover()
                except Compacted as e:
                    log.warning("%s: reading every request again", e)
                    self.revisions.clear()
                except NotReady as e:
                    log.warning("%s; looking again in %.1f s", e, backoff)
                except Exception:
                    log.exception("session failed; starting again in %.1f s", backoff)
                    await self.etcd.failover()
                if time.monotonic() - started > 30:
                    backoff = 0.2
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            await self._revoke_liveness()
            await self.ctl.close()
            await self.etcd.close()
            log.info("stopped: %s", self.stats)

    async def _session(self) -> None:
        self.stats.sessions += 1
        log.info("session %d: etcd %s, spp-ctl %s", self.stats.sessions, self.etcd.endpoint, self.api)
        await self._load_configuration()
        if not self.revisions:
            await self._scan()
        self.needs_rebuild = True
        lease = await self._announce()
        try:
            async with asyncio.TaskGroup() as tg:
                for prefix in self.watched:
                    tg.create_task(self._watch(prefix))
                tg.create_task(self._heartbeat(lease))
                tg.create_task(self._health())
                tg.create_task(self._worker())
        except BaseExceptionGroup as group:
            for kind in (Compacted, EtcdUnavailable, NotReady):
                found = group.subgroup(kind)
                if found is not None:
                    raise _first(found) from None
            raise

    async def _load_configuration(self) -> None:
        text = await self.etcd.get(keys.configuration_key(self.host))
        if text is None:
            raise NotReady(f"no configuration for host {self.host} ({keys.configuration_key(self.host)})")
        if text != self.config_text:
            try:
                layout = parse_configuration(text)
            except BadValue as e:
                raise NotReady(f"configuration of {self.host} is unusable: {e}") from None
            self.layout, self.config_text = layout, text
            self.needs_rebuild = True
            log.info(
                "configuration: %s; %d mirror(s)",
                ", ".join(f"spp_vf {v.client_id} {v.physnet}" for v in layout.vfs),
                len(layout.mirrors),
            )

    async def _scan(self) -> None:
        """Every pending request of this host, and the revision to watch from."""
        start = 0
        for prefix, kind in ((self.watched[0], "port"), (self.watched[1], "tap")):
            kvs, rev = await self.etcd.get_prefix(prefix)
            start = start or rev  # the first read's: watching from there misses nothing
            for kv in kvs:
                self.queue.add(_Work(kind, kv.key[len(prefix) :]))
        for prefix in self.watched:
            self.revisions[prefix] = start

    async def _watch(self, prefix: str) -> None:
        start = self.revisions[prefix] + 1
        log.debug("watching %s from revision %d", prefix, start)
        async for ev in self.etcd.watch_prefix(prefix, start):
            self.revisions[prefix] = ev.revision
            if prefix == self.watched[2]:
                if ev.key == prefix:
                    log.info("configuration changed")
                    if ev.value is not None:
                        await self._load_configuration()
                        self.needs_rebuild = True
                continue
            if ev.value is None:
                continue  # our own deletes, after an unplug
            ident = ev.key[len(prefix) :]
            if ident:
                self.queue.add(_Work("port" if prefix == self.watched[0] else "tap", ident))

    async def _announce(self) -> Any:
        """``agent/<host>`` under a new lease: the liveness ``port plug`` and ``tap create``
        check. Written before the data plane is built, so it exists by the time the agent says
        it is ready."""
        lease = self._lease = await self.etcd.lease(LEASE_TTL)
        info = {"api": self.api, "pid": os.getpid(), "since": int(time.time())}
        await self.etcd.put(keys.agent_key(self.host), json.dumps(info), lease=lease)
        return lease

    async def _heartbeat(self, lease: Any) -> None:
        """Keep the liveness lease; a refresh that fails ends the session (this member may be
        cut off)."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            await self.etcd.refresh(lease)

    async def _revoke_liveness(self) -> None:
        """On a clean stop ``agent/<host>`` goes at once, so the tools refuse to plug without
        waiting out the lease; best effort (etcd may be gone too: then the lease expires)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                await asyncio.wait_for(self.etcd.revoke(lease), 3)
            except (EtcdUnavailable, TimeoutError) as e:
                log.info("liveness lease not revoked (%s); it expires in %d s", e, LEASE_TTL)

    async def _health(self) -> None:
        """Rebuild the data plane when a secondary came back empty or spp-ctl restarted."""
        while True:
            if not self.needs_rebuild:
                try:
                    missing = await DataPlane(self.ctl, self._layout()).missing_components()
                except SppCtlUnavailable as e:
                    missing = [str(e)]
                if missing:
                    log.warning("data plane incomplete (%s): rebuilding", "; ".join(missing[:4]))
                    self.needs_rebuild = True
            if self.needs_rebuild:
                await self._rebuild()
            else:
                await self._free_orphaned_claims()
            await asyncio.sleep(HEALTH_INTERVAL)

    async def _free_orphaned_claims(self) -> None:
        """Mirrors claimed (``mirror/<host>/<id>``) for a tap flow that has no keys any more (they
        were deleted around the agent, which never saw an unplug) would stay claimed for good: no
        new tap could use them. One seen so, unchanged, for ``claim_grace`` seconds is taken down
        if still wired and freed, with a compare on its revision (a new claim meanwhile wins)."""
        if not self._layout().mirrors:
            return
        _, flows = await self._tap_flows()
        now = time.monotonic()
        seen: dict[str, tuple[int, float]] = {}
        due = []
        for kv in await self._host_kvs("mirror"):
            if kv.value == keys.FREE or kv.value in flows:
                continue
            first = self._orphans.get(kv.key)
            if first is None or first[0] != kv.mod_revision:
                first = (kv.mod_revision, now)
            seen[kv.key] = first
            if now - first[1] >= self.claim_grace:
                due.append(kv)
        self._orphans = seen
        if not due:
            return
        async with self._busy:
            await self._clear_stale_taps(DataPlane(self.ctl, self._layout()))
        for kv in due:
            freed = await self.etcd.txn(
                lambda t, kv=kv: [t.mod(kv.key.encode()) == kv.mod_revision],
                lambda t, kv=kv: [t.put(kv.key.encode(), keys.FREE.encode())],
            )
            self._orphans.pop(kv.key, None)
            if freed:
                self.stats.claims_freed += 1
                log.warning(
                    "mirror %s was claimed by tap flow %s, which has had no keys for %.0f s: freed",
                    kv.key.rsplit("/", 1)[1],
                    kv.value,
                    self.claim_grace,
                )

    async def _rebuild(self) -> None:
        """Build what is missing and queue every request again; holds the data plane, so no
        request is carried out half before and half after it (nor cleared by it)."""
        async with self._busy:
            await self._rebuild_locked()

    async def _rebuild_locked(self) -> None:
        dp = DataPlane(self.ctl, self._layout())
        try:
            changes = await self._clear_stale_taps(dp)
            changes += await dp.build()
        except SppCtlUnavailable as e:
            if not self._ready_logged:
                log.warning("waiting for spp-ctl and the secondaries: %s", e)
                self._ready_logged = True
            return
        except SppCtlError as e:
            log.error("cannot build the configured components: %s", e)
            return
        self._ready_logged = False
        await self._clear_unclaimed(dp)
        kvs, _ = await self.etcd.get_prefix(self.watched[0])
        for kv in kvs:
            self.queue.add(_Work("port", kv.key[len(self.watched[0]) :]))
        kvs, _ = await self.etcd.get_prefix(self.watched[1])
        for kv in kvs:
            self.queue.add(_Work("tap", kv.key[len(self.watched[1]) :]))
        self.needs_rebuild = False
        self.stats.rebuilds += 1
        log.info("data plane built (%d change(s)); looking at every request again", changes)

    async def _clear_stale_taps(self, dp: DataPlane) -> int:
        """Mirrors still wired for tap flows whose keys are gone (deleted while the agent was
        down, or while it was cut off and the history compacted) are taken down before the
        build gives the forwarders their rings back. A mirror some tap flow's keys still name
        is left alone: its request is looked at again right after."""
        if not self._layout().mirrors:
            return 0
        used = await self._mirrors_in_use()
        changes = 0
        for m in self._layout().mirrors:
            if m.mirror_id not in used:
                changes += await dp.untap_mirror(m)
        return changes

    async def _mirrors_in_use(self) -> set[int]:
        """Mirror ids a tap flow of this host accounts for: those its ``tap_info`` names, or,
        when that is unreadable, those ``mirror/<host>/<id>`` says it claimed."""
        infos, flows = await self._tap_flows()
        claims = [(kv.value, kv.key.rsplit("/", 1)[1]) for kv in await self._host_kvs("mirror")]
        used: set[int] = set()
        for flow in flows:
            try:
                tap = TapInfo.parse(infos.get(flow, ""))
                used |= {m for m in (tap.mirror_in, tap.mirror_out) if m is not None}
            except BadValue:
                used |= {int(mid) for fid, mid in claims if fid == flow and mid.isdigit()}
        return used

    async def _tap_flows(self) -> tuple[dict[str, str], set[str]]:
        """This host's ``tap_info`` values by flow id, and every flow id that has a key (its
        ``tap_info`` or its ``tap_action``)."""
        infos = {kv.key.rsplit("/", 1)[1]: kv.value for kv in await self._host_kvs("tap_info")}
        return infos, set(infos) | {kv.key.rsplit("/", 1)[1] for kv in await self._host_kvs("tap_action")}

    async def _host_kvs(self, kind: str) -> list[Any]:
        kvs, _ = await self.etcd.get_prefix(keys.host_prefix(kind, self.host))
        return kvs

    async def _clear_unclaimed(self, dp: DataPlane) -> None:
        """Vhosts no port is bound to must not keep classifier entries from before."""
        kvs, _ = await self.etcd.get_prefix(keys.host_prefix("vhost", self.host))
        claimed = set()
        for kv in kvs:
            if kv.value != keys.FREE:
                with contextlib.suppress(ValueError):
                    claimed.add(int(kv.key.rsplit("/", 1)[1]))
        for vh in self._layout().vhosts.values():
            if vh.vhost_id not in claimed and await dp.unplug(vh):
                log.info("vhost:%d is free: cleared what was left on it", vh.vhost_id)

    def _layout(self) -> Layout:
        assert self.layout is not None
        return self.layout

    # -- requests ----------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            work = await self.queue.take()
            if self.needs_rebuild:
                self.queue.add(work)
                await asyncio.sleep(0.2)
                continue
            try:
                async with self._busy:
                    if work.kind == "port":
                        await self._port(work.ident)
                    else:
                        await self._tap(work.ident)
                self.queue.refusals.pop(work, None)
            except EtcdUnavailable:
                self.queue.add(work)
                raise
            except SppCtlUnavailable as e:
                log.warning("%s %s: %s; retrying after the data plane is back", work.kind, work.ident, e)
                self.needs_rebuild = True
                self.queue.add(work)
            except SppCtlError as e:
                n = self.queue.refusals.get(work, 0) + 1
                self.queue.refusals[work] = n
                if n >= MAX_REFUSALS:
                    log.error("%s %s: given up: %s", work.kind, work.ident, e)
                    self.queue.refusals.pop(work, None)
                    self.stats.skipped += 1
                else:
                    log.warning("%s %s: %s; checking the data plane and retrying", work.kind, work.ident, e)
                    self.needs_rebuild = True
                    self.queue.add(work)

    def _skip(self, what: str, why: object) -> None:
        log.error("%s: %s; skipped", what, why)
        self.stats.skipped += 1

    async def _claimed_vhosts(self, port_id: str) -> list[Vhost]:
        kvs, _ = await self.etcd.get_prefix(keys.host_prefix("vhost", self.host))
        out = []
        for kv in kvs:
            if kv.value == port_id:
                with contextlib.suppress(ValueError, KeyError):
                    out.append(self._layout().vhosts[int(kv.key.rsplit("/", 1)[1])])
        return out

    async def _port(self, port_id: str) -> None:
        what = f"port {port_id}"
        action = await self.etcd.get(self.k("action", port_id))
        if action is None:
            return  # done already (an unplug deletes the key last)
        text = await self.etcd.get(self.k("bind_port", port_id))
        bp: BindPort | None = None
        vh: Vhost | None = None
        problem: str | None = None
        if text is None:
            problem = "no bind_port"
        else:
            try:
                bp = BindPort.parse(text)
                vh = self._layout().vhosts.get(bp.vhost_id)
                if vh is None:
                    problem = f"vhost_id {bp.vhost_id} is not in the configuration"
            except BadValue as e:
                problem = f"bind_port: {e}"
        if action == keys.PLUG:
            if problem:
                return self._skip(what, problem)
            assert bp is not None and vh is not None
            owner = await self.etcd.get(keys.vhost_key(self.host, vh.physnet, vh.vhost_id))
            if owner != port_id:
                return self._skip(
                    what, f"vhost {vh.physnet}/{vh.vhost_id} is held by {owner!r}, not this port"
                )
            changed = await DataPlane(self.ctl, self._layout()).plug(vh, bp)
            if await self.etcd.get(self.k("port_status", port_id)) != keys.UP:
                await self.etcd.put(self.k("port_status", port_id), keys.UP)
                self.stats.plugged += 1
                log.info("plugged %s: %s vlan %s -> vhost:%d", what, bp.mac, bp.vlan_id, vh.vhost_id)
            elif changed:
                log.info("%s: restored in the data plane", what)
        elif action == keys.UNPLUG:
            await self._unplug_port(port_id, vh, problem)
        else:
            self._skip(what, f"action is {action!r}, neither plug nor unplug")

    async def _unplug_port(self, port_id: str, vh: Vhost | None, problem: str | None) -> None:
        what = f"port {port_id}"
        # the vhosts etcd says this port holds, whatever bind_port claims: a bad bind_port must
        # not clear another port's vhost
        vhosts = await self._claimed_vhosts(port_id)
        if vh is not None and vh not in vhosts:
            log.warning("%s: vhost:%d is not held by this port; leaving it alone", what, vh.vhost_id)
        if problem:
            log.warning("%s: %s; unplugging vhost(s) %s", what, problem, [v.vhost_id for v in vhosts])
        if self._layout().mirrors:
            await self._unplug_taps_of(port_id)
        dp = DataPlane(self.ctl, self._layout())
        for v in vhosts:
            await dp.unplug(v)
        gone = [self.k(kind, port_id) for kind in ("bind_port", "action", "port_status")]
        for v in vhosts or [None]:
            vkey = keys.vhost_key(self.host, v.physnet, v.vhost_id) if v else None
            await self.etcd.txn(
                lambda t, vkey=vkey: [t.value(vkey.encode()) == port_id.encode()] if vkey else [],
                lambda t, vkey=vkey: (
                    ([t.put(vkey.encode(), keys.FREE.encode())] if vkey else [])
                    + [t.delete(g.encode()) for g in gone]
                ),
                lambda t: [t.delete(g.encode()) for g in gone],
            )
        self.stats.unplugged += 1
        log.info("unplugged %s from vhost(s) %s", what, [v.vhost_id for v in vhosts])

    async def _unplug_taps_of(self, port_id: str) -> None:
        prefix = keys.host_prefix("tap_info", self.host)
        kvs, _ = await self.etcd.get_prefix(prefix)
        for kv in kvs:
            with contextlib.suppress(BadValue):
                tap = TapInfo.parse(kv.value)
                if port_id in (tap.service_port, tap.source_port):
                    log.info("port %s goes: taking tap flow %s down first", port_id, kv.key[len(prefix) :])
                    await self._tap_unplug(kv.key[len(prefix) :], tap)

    async def _tap_vhosts(self, tap: TapInfo) -> tuple[Vhost, Vhost]:
        out = []
        for port in (tap.source_port, tap.service_port):
            text = await self.etcd.get(self.k("bind_port", port))
            if text is None:
                raise BadValue(f"port {port} is not bound on {self.host}")
            vh = self._layout().vhosts.get(BindPort.parse(text).vhost_id)
            if vh is None:
                raise BadValue(f"port {port}'s vhost is not in the configuration")
            out.append(vh)
        return out[0], out[1]

    async def _tap(self, tf_id: str) -> None:
        what = f"tap flow {tf_id}"
        action = await self.etcd.get(self.k("tap_action", tf_id))
        if action is None:
            return
        text = await self.etcd.get(self.k("tap_info", tf_id))
        if text is None:
            return self._skip(what, "no tap_info")
        try:
            tap = TapInfo.parse(text)
        except BadValue as e:
            return self._skip(what, f"tap_info: {e}")
        if action == keys.PLUG:
            try:
                src, dst = await self._tap_vhosts(tap)
            except BadValue as e:
                return self._skip(what, e)
            dp = DataPlane(self.ctl, self._layout())
            problems = dp.tap_parts(tap, src, dst)
            if problems:
                return self._skip(what, "; ".join(problems))
            for mid in (tap.mirror_in, tap.mirror_out):
                if mid is not None and await self.etcd.get(self.k("mirror", mid)) != tf_id:
                    return self._skip(what, f"mirror {mid} is not held by this tap flow")
            await dp.tap(tap, src, dst, on=True)
            if await self.etcd.get(self.k("tap_status", tf_id)) != keys.UP:
                await self.etcd.put(self.k("tap_status", tf_id), keys.UP)
                self.stats.taps_plugged += 1
                log.info(
                    "tapped %s: %s -> %s (in %s, out %s)",
                    what,
                    tap.source_port,
                    tap.service_port,
                    tap.mirror_in,
                    tap.mirror_out,
                )
        elif action == keys.UNPLUG:
            await self._tap_unplug(tf_id, tap)
        else:
            self._skip(what, f"tap_action is {action!r}, neither plug nor unplug")

    async def _tap_unplug(self, tf_id: str, tap: TapInfo) -> None:
        try:
            src, dst = await self._tap_vhosts(tap)
        except BadValue as e:
            return self._skip(f"tap flow {tf_id}", f"cannot find its wiring: {e}")
        dp = DataPlane(self.ctl, self._layout())
        if not dp.tap_parts(tap, src, dst):
            await dp.tap(tap, src, dst, on=False)
        for mid in (tap.mirror_in, tap.mirror_out):
            if mid is not None:
                await self.etcd.replace(self.k("mirror", mid), tf_id, keys.FREE)
        gone = [self.k(kind, tf_id) for kind in ("tap_info", "tap_action", "tap_status")]
        await self.etcd.txn(lambda t: [], lambda t: [t.delete(g.encode()) for g in gone])
        self.stats.taps_unplugged += 1
        log.info("untapped tap flow %s", tf_id)
