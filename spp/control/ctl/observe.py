"""What ``/metrics`` and the web page see: one status round over every registered process, in
the REST API's shapes (:class:`spp.control.view.model.Snapshot`), and the processes' CPU time
from ``/proc``.

A round sends ``status`` to every process at once and waits at most :data:`ROUND_DEADLINE`, so
a stopped or slow process costs its place in that round, never the round itself (as
``GET /v1/processes``).
"""

from __future__ import annotations

import os
from typing import Any

from spp.control.view.model import Snapshot, process_name

from .errors import ApiError
from .registry import Proc, Registry
from .webapi import check_reply, convert_vf_info
from .wire import Reply

ROUND_DEADLINE = 0.8
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rest_status(proc: Proc, reply: Reply) -> dict[str, Any] | None:
    """A ``status`` reply as the REST API's GET of that process shows it (None if unusable)."""
    if not isinstance(reply, dict):
        return None
    try:
        check_reply("status", reply)
        if proc.type in ("vf", "mirror"):
            return convert_vf_info(proc, reply)
        if proc.type == "pcap":
            info = reply.get("info")
            return info if isinstance(info, dict) else None
    except ApiError:
        return None
    return reply


async def collect(registry: Registry) -> tuple[Snapshot, dict[str, int | None]]:
    """One round: the snapshot, and each listed process's pid (None if unknown)."""
    replies = await registry.probe(registry.all(), deadline=ROUND_DEADLINE)
    snap = Snapshot()
    pids: dict[str, int | None] = {}
    for proc in registry.all():
        entry: dict[str, Any] = {"type": proc.type}
        primary = proc.type == "primary"
        if not primary:
            entry["client-id"] = proc.id
        if not registry.responding(proc):
            entry["status"] = "not responding"
        snap.processes.append(entry)
        name = process_name(proc.type, None if primary else proc.id)
        pids[name] = proc.conn.pid
        reply = replies.get(proc.id)
        status = None if reply is None else rest_status(proc, reply)
        if status is not None:
            snap.statuses[name] = status
    return snap, pids


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread name of ``pid``; {} if it cannot be read. Threads
    of one name (spp_vf's lanes are named per lcore, so rarely) are added up."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.find("(") + 1 : raw.rfind(")")]
        fields = raw[raw.rfind(")") + 2 :].split()
        if len(fields) < 13:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
        out[name] = out.get(name, 0.0) + seconds
    return out
