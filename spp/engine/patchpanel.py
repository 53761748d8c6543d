"""The patch panel: spp_nfv's model (also the primary's forwarder).

A set of ports opened in this process, a table ``src -> dst`` (each source has at most one
destination; several sources may share one), and a forwarding switch. Every change is applied by
building a fresh plan and handing it to the :class:`~spp.engine.worker.Worker`, the way Snabb's
``engine.configure`` swaps app networks: the worker never sees a half-edited table.

Differences from the C spp_nfv, on purpose (see spec §3.4): ``del`` removes the port and every
patch to or from it and leaves forwarding of the other patches running; adding a port twice, or
patching a port that was not added, is refused with a reason.
"""

from __future__ import annotations

import logging
import threading

from spp.engine.offload import xstats_dict
from spp.engine.portid import PortId, parse_port_uid
from spp.engine.ports import Port, PortContext, PortError, open_port
from spp.engine.shm import counter_fields
from spp.engine.worker import Route, Worker

log = logging.getLogger(__name__)


class PatchPanelError(Exception):
    """A refused panel command; the message is meant for the user."""


class PatchPanel:
    def __init__(self, ctx: PortContext, worker: Worker, addable: tuple[str, ...]) -> None:
        self.ctx = ctx
        self.worker = worker
        self.addable = addable  # port types the user may add/del (phy ports are fixed)
        self.ports: dict[PortId, Port] = {}
        self.patches: dict[PortId, PortId] = {}
        self.forwarding = False
        self._lock = threading.Lock()  # commands may come from more than one control thread

    # -- ports ---------------------------------------------------------------------------------

    def register(self, uid: PortId) -> None:
        """Enter a port present from start-up (phy ports). Opening is left to the driver's laziness."""
        self.ports[uid] = open_port(uid, self.ctx)

    def add(self, text: str) -> PortId:
        uid = self._parse(text)
        with self._lock:
            if uid.type not in self.addable:
                if uid.type == "phy":
                    raise PatchPanelError(f"cannot add {uid}: phy ports are set up by the primary at start")
                raise PatchPanelError(f"cannot add {uid}: {uid.type} ports cannot be added here")
            if uid in self.ports:
                raise PatchPanelError(f"port {uid} is already added")
            try:
                self.ports[uid] = open_port(uid, self.ctx)
            except PortError as e:
                raise PatchPanelError(str(e)) from e
            except OSError as e:
                raise PatchPanelError(f"cannot open {uid}: {e.strerror or e}") from e
        return uid

    def delete(self, text: str) -> PortId:
        uid = self._parse(text)
        with self._lock:
            if uid not in self.ports:
                raise PatchPanelError(f"port {uid} is not added")
            if uid.type == "phy":
                raise PatchPanelError(f"cannot delete phy port '{uid}'")
            self.patches = {s: d for s, d in self.patches.items() if uid not in (s, d)}
            self._apply()  # the worker lets go of the port before it is closed
            port = self.ports.pop(uid)
            port.close()
        return uid

    # -- patches -------------------------------------------------------------------------------

    def patch(self, src_text: str, dst_text: str) -> tuple[PortId, PortId]:
        src, dst = self._parse(src_text), self._parse(dst_text)
        with self._lock:
            for uid in (src, dst):
                if uid not in self.ports:
                    raise PatchPanelError(f"port {uid} is not added")
            self.patches[src] = dst
            self._apply()
        return src, dst

    def reset(self) -> None:
        with self._lock:
            self.patches = {}
            self._apply()

    # -- forwarding switch ---------------------------------------------------------------------

    def forward(self) -> None:
        with self._lock:
            self.forwarding = True
            self._apply()

    def stop(self) -> None:
        with self._lock:
            self.forwarding = False
            self._apply()

    def close(self) -> None:
        with self._lock:
            self.forwarding = False
            self.patches = {}
            self._apply()
            for port in self.ports.values():
                port.close()
            self.ports.clear()

    # -- views ---------------------------------------------------------------------------------

    def port_names(self) -> list[str]:
        return [uid.display for uid in self.ports]

    def patch_list(self) -> list[dict[str, str]]:
        return [{"src": s.display, "dst": d.display} for s, d in self.patches.items()]

    def port_stats(self) -> list[dict[str, object]]:
        """This process's own counters per port (SPP showed them only for phy and ring)."""
        out = []
        for uid, port in self.ports.items():
            c = port.counters
            entry: dict[str, object] = {
                "port": uid.display,
                **counter_fields(c),
                # Not in SPP: drops by reason and offload work done (zeros left out).
                "xstats": xstats_dict(port.xstats),
            }
            info = getattr(port, "info", None)
            if info is not None:  # a vhost port's peer: socket, connected, errors
                entry.update(info())
            out.append(entry)
        return out

    # -- internals -----------------------------------------------------------------------------

    def _parse(self, text: str) -> PortId:
        try:
            return parse_port_uid(text)
        except ValueError as e:
            raise PatchPanelError(str(e)) from e

    def _apply(self) -> None:
        if not self.forwarding:
            self.worker.publish(None)
            return
        steps = []
        for s, d in self.patches.items():
            src, dst = self.ports[s], self.ports[d]
            steps.append(src.route_to(dst) or Route(src, dst))
        self.worker.publish(steps)
