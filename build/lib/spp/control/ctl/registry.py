"""The process table: which SPP processes are connected, under which ID, in which order.

Like SPP's ``Controller.procs`` it is a dict in registration order, key 0 for the primary and the
``client_id`` for secondaries; replacing an entry keeps its position (``GET /v1/processes`` lists
them in this order). Differences from SPP, all deliberate:

* An entry disappears the moment its socket closes (the connection's reader sees EOF), not only
  when some later command happens to fail.
* A secondary that registers with an ID that is already taken is *rejected* if the holder still
  answers. SPP silently replaced the holder, so two workers ended up sharing one ID and spp-ctl
  could no longer reach the first one. If the holder is dead, the newcomer takes its place.
* A process that breaks its connection or does not answer in time is dropped and the request that
  noticed gets :class:`~spp.control.ctl.errors.ProcessUnavailable` (503), never a 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from .errors import ProcessUnavailable
from .wire import Connection, ConnectionClosed, Identity, Reply, ReplyTimeout

LOG = logging.getLogger(__name__)

PRIMARY_ID = 0
TYPE_PRIMARY = "primary"

COMMAND_TIMEOUT = 10.0
"""Default time a process gets to answer one command."""

LAUNCH_TIMEOUT = 20.0
"""Time for ``launch``, until the new secondary has registered (our primary kills a secondary that
has not registered after its own, shorter ``--launch-timeout``, and reports why)."""

PROBE_TIMEOUT = 5.0
"""Time a process gets to answer a liveness ``status`` probe."""

NOT_RESPONDING_AFTER = 1.0
"""A process whose reply is this many seconds overdue is listed as not responding."""

REJECT_WARN_INTERVAL = 30.0
"""Seconds between repeated warnings about the same rejected client id."""


@dataclass
class Proc:
    """A registered process. ``type`` is primary, nfv, vf, mirror or pcap."""

    type: str
    id: int
    conn: Connection

    @property
    def label(self) -> str:
        return TYPE_PRIMARY if self.type == TYPE_PRIMARY else f"{self.type}({self.id})"


class Registry:
    """The process table plus the rules for joining it, leaving it and talking to its members."""

    def __init__(
        self,
        command_timeout: float = COMMAND_TIMEOUT,
        launch_timeout: float = LAUNCH_TIMEOUT,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.command_timeout = command_timeout
        self.launch_timeout = launch_timeout
        self.probe_timeout = probe_timeout
        self._procs: dict[int, Proc] = {}
        # Registration of secondaries is check-then-insert around an await (the probe of the
        # current holder), so it is serialized to keep two newcomers from both winning.
        self._register_lock = asyncio.Lock()
        self._rejected_at: dict[int, float] = {}

    # -- lookup ---------------------------------------------------------------------------------

    def all(self) -> list[Proc]:
        """Every registered process, in registration order."""
        return list(self._procs.values())

    def get(self, proc_id: int) -> Proc | None:
        return self._procs.get(proc_id)

    def primary(self) -> Proc | None:
        return self._procs.get(PRIMARY_ID)

    def secondary(self, sec_id: int, proc_type: str) -> Proc | None:
        """The secondary with this ID if it has this type (SPP: other type -> not found)."""
        proc = self._procs.get(sec_id)
        if proc is None or proc.type != proc_type or sec_id == PRIMARY_ID:
            return None
        return proc

    # -- joining and leaving --------------------------------------------------------------------

    async def register_primary(self, conn: Connection) -> Proc | None:
        """A connection on the primary port is the primary unless a live one is registered.

        SPP let every new connection replace the primary (and receive its commands); here the
        registered primary keeps its place as long as it answers, as a secondary keeps its id.
        """
        async with self._register_lock:
            old = self._procs.get(PRIMARY_ID)
            if old is not None and await self._is_alive(old):
                self._warn_rejected(
                    PRIMARY_ID,
                    "Rejected a primary connecting from %s: the primary connected from %s is still "
                    "alive. Stop it before starting another one.",
                    conn.peer,
                    old.conn.peer,
                )
                return None
            self._rejected_at.pop(PRIMARY_ID, None)
            if conn.closed:
                return None
            conn.label = TYPE_PRIMARY
            self._procs[PRIMARY_ID] = Proc(TYPE_PRIMARY, PRIMARY_ID, conn)
            if old is not None:
                LOG.warning(
                    "spp_primary reconnected from %s; its old connection from %s was dead",
                    conn.peer,
                    old.conn.peer,
                )
                old.conn.close()
            else:
                LOG.info("primary connected from %s", conn.peer)
            conn.add_close_callback(self._on_closed)
            return self._procs[PRIMARY_ID]

    def _warn_rejected(self, proc_id: int, message: str, *args: object) -> None:
        """A rejected C process reconnects every second: warn once, then now and then."""
        now = time.monotonic()
        last = self._rejected_at.get(proc_id)
        level = logging.DEBUG
        if last is None or now - last >= REJECT_WARN_INTERVAL:
            level = logging.WARNING
            self._rejected_at[proc_id] = now
        LOG.log(level, message, *args)

    async def register_secondary(self, conn: Connection, ident: Identity) -> Proc | None:
        """Add a secondary that identified itself; None if its ID belongs to a live process."""
        async with self._register_lock:
            label = f"{ident.type}({ident.id})"
            old = self._procs.get(ident.id)
            if old is not None and await self._is_alive(old):
                self._warn_rejected(
                    ident.id,
                    "Rejected %s connecting from %s: client id %d is already used by %s (from %s), "
                    "which is still alive. Give the new process another ID.",
                    label, conn.peer, ident.id, old.label, old.conn.peer,
                )  # fmt: skip
                return None
            self._rejected_at.pop(ident.id, None)
            if conn.closed:
                LOG.info("%s from %s went away while registering", label, conn.peer)
                return None
            conn.label = label
            proc = Proc(ident.type, ident.id, conn)
            # Assigning to an existing key keeps its position in the dict (SPP's behaviour).
            self._procs[ident.id] = proc
            if old is not None:
                LOG.warning("%s reconnected from %s; its old connection from %s was dead", label, conn.peer,
                            old.conn.peer)  # fmt: skip
                if old.type != ident.type:
                    LOG.warning("client id %d changed type: %s -> %s", ident.id, old.type, ident.type)
                old.conn.close()
            else:
                LOG.info("%s connected from %s", label, conn.peer)
            conn.add_close_callback(self._on_closed)
            return proc

    async def _is_alive(self, proc: Proc) -> bool:
        """Does the current holder of an ID still answer? A busy or a stopped (SIGSTOP) one does."""
        if proc.conn.closed:
            return False
        if proc.conn.lock.locked() or proc.conn.stopped:
            return True
        # Not via command(): a dead holder must stay in the table until the newcomer has taken
        # its slot, so that the newcomer inherits its position.
        LOG.info("%s: probing with 'status' (a newcomer claims its id)", proc.label)
        try:
            await proc.conn.request("status", self.probe_timeout)
        except (ConnectionClosed, ReplyTimeout) as exc:
            LOG.info("%s: probe failed: %s", proc.label, exc)
            return False
        return True

    def remove(self, proc: Proc) -> bool:
        """Drop ``proc`` from the table if it is still the registered entry for its ID."""
        if self._procs.get(proc.id) is proc:
            del self._procs[proc.id]
            return True
        return False

    def _on_closed(self, conn: Connection) -> None:
        for proc in list(self._procs.values()):
            if proc.conn is conn:
                self.remove(proc)
                LOG.info("%s disconnected; removed from the process list", proc.label)

    def close_all(self) -> None:
        for proc in list(self._procs.values()):
            proc.conn.close()
        self._procs.clear()

    # -- talking --------------------------------------------------------------------------------

    async def command(self, proc: Proc, command: str, timeout: float | None = None) -> Reply:
        """Send one command to ``proc``; a broken or silent process is dropped -> 503."""
        timeout = self.command_timeout if timeout is None else timeout
        LOG.info("%s: command %r", proc.label, command)
        if proc.conn.stopped:
            # It would answer only once resumed; it keeps its registration meanwhile.
            raise ProcessUnavailable(
                f"{proc.label} is not responding: its process {proc.conn.pid} is stopped (SIGSTOP?)."
            )
        try:
            return await proc.conn.request(command, timeout)
        except ConnectionClosed as exc:
            self._drop(proc, f"{exc}")
            raise ProcessUnavailable(
                f"{proc.label} closed its connection while handling '{command}'; it has been removed."
            ) from exc
        except ReplyTimeout as exc:
            self._drop(proc, f"{exc}")
            raise ProcessUnavailable(
                f"{proc.label} did not answer '{command}' within {timeout:g} s; it has been removed."
            ) from exc

    def _drop(self, proc: Proc, reason: str) -> None:
        if self.remove(proc):
            LOG.warning("%s dropped from the process list: %s", proc.label, reason)
        proc.conn.close()

    async def probe(self, procs: list[Proc], deadline: float | None = None) -> dict[int, Reply]:
        """Send ``status`` to each of ``procs`` at once; drop the failures; return the replies.

        With ``deadline`` the answer is given after that many seconds at most: probes still
        running go on in the background (and drop their process if it never answers), their
        processes are missing from the result. Stopped processes are not probed (nor dropped).
        """

        async def one(proc: Proc) -> tuple[Proc, Reply | None]:
            try:
                return proc, await self.command(proc, "status", timeout=self.probe_timeout)
            except ProcessUnavailable:
                return proc, None

        tasks = [asyncio.ensure_future(one(p)) for p in procs if not p.conn.stopped]
        if not tasks:
            return {}
        done, _running = await asyncio.wait(tasks, timeout=deadline)
        results = [task.result() for task in done]
        return {proc.id: reply for proc, reply in results if reply is not None}

    def responding(self, proc: Proc) -> bool:
        """False while ``proc`` is stopped or has left a command unanswered for a while."""
        return not proc.conn.stopped and proc.conn.busy_for() < NOT_RESPONDING_AFTER
