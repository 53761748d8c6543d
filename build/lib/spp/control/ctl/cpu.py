"""CPU layout and usage for ``GET /v1/cpu_layout`` and ``GET /v1/cpu_usage`` (spp-api.md §3.3).

SPP shelled out to ``tools/helpers/cpu_layout.py --json``; the data is a few sysfs files, so we
read them directly — same traversal (CPUs in numeric order, sockets and cores in first-seen order),
same JSON shape, no helper script to go missing.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

SYSFS_CPU = Path("/sys/devices/system/cpu")
_CPU_DIR_RE = re.compile(r"cpu([0-9]+)")


def cpu_layout(base: Path = SYSFS_CPU) -> list[dict[str, Any]] | None:
    """``[{"socket_id": S, "cores": [{"core_id": C, "lcores": [cpu, ...]}, ...]}, ...]``.

    None when no CPU topology can be read (SPP answered 204 when its helper was missing).
    CPUs without a topology directory (offline) are skipped, as the SPP helper did.
    """
    try:
        entries = [(int(m[1]), p) for p in base.iterdir() if (m := _CPU_DIR_RE.fullmatch(p.name))]
    except OSError as exc:
        LOG.warning("cannot read %s: %s", base, exc)
        return None
    core_map: dict[tuple[int, int], list[int]] = {}
    for cpu, path in sorted(entries):
        try:
            core = int((path / "topology" / "core_id").read_text())
            socket = int((path / "topology" / "physical_package_id").read_text())
        except (OSError, ValueError):
            continue
        core_map.setdefault((socket, core), []).append(cpu)
    if not core_map:
        return None
    sockets: dict[int, list[dict[str, Any]]] = {}
    for (socket, core), cpus in core_map.items():
        sockets.setdefault(socket, []).append({"core_id": core, "lcores": cpus})
    return [{"socket_id": socket, "cores": cores} for socket, cores in sockets.items()]


def usage_entry(proc_type: str, client_id: int, status: Any) -> dict[str, Any] | None:
    """One ``/v1/cpu_usage`` entry from a process's ``status`` reply; None if the reply is unusable.

    * primary: master-lcore = ``lcores[0]``
    * nfv: ``master-lcore`` and ``lcores`` from the status object
    * vf/mirror/pcap: from ``info``: master-lcore, then the ``core`` of every ``info.core`` entry
    """
    try:
        if proc_type == "primary":
            lcores = list(status["lcores"])
            master = lcores[0] if lcores else status.get("master-lcore")
            return {"proc-type": "primary", "master-lcore": master, "lcores": lcores}
        if proc_type == "nfv":
            return {
                "proc-type": "nfv",
                "client-id": client_id,
                "master-lcore": status["master-lcore"],
                "lcores": list(status["lcores"]),
            }
        info = status["info"]
        master = info["master-lcore"]
        return {
            "proc-type": proc_type,
            "client-id": client_id,
            "master-lcore": master,
            "lcores": [master] + [c["core"] for c in info.get("core", [])],
        }
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        LOG.warning(
            "%s(%d): status reply unusable for cpu_usage (%r): %.200s", proc_type, client_id, exc, status
        )
        return None
