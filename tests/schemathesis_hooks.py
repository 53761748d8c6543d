"""Schemathesis hooks for tests/test_ctl_fuzz.py (loaded through ``SCHEMATHESIS_HOOKS``).

The fuzz drives real processes. Ports of a few types create things on the host when added
(``tap:N`` a TAP device, ``vhost:N`` a socket, ``memif:N`` a socket, ``pcap:N`` files in /tmp
shared with anything else running there); requests naming them are left out, so the fuzz leaves
nothing behind. Their handling of bad input is the same code path as every other port type.
"""

from __future__ import annotations

import json
import re
from typing import Any

import schemathesis

HOST_OBJECT_PORT = re.compile(r"(tap|vhost|memif|pcap):")


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    try:
        text = json.dumps(case.body, default=str)
    except (TypeError, ValueError, RecursionError):
        return True
    return HOST_OBJECT_PORT.search(text) is None


REAL_IDS = {"nfvs": 1, "vfs": 2, "mirrors": 3, "pcaps": 4}  # as tests/test_ctl_fuzz.py starts them


@schemathesis.hook
def map_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Aim three requests in four at the process that exists, so its own checks get fuzzed too.

    Random ids would almost all end in a 404 at spp-ctl; the fourth keeps whatever was generated.
    """
    if not path_parameters:
        return path_parameters
    sec_id = path_parameters.get("sec_id")
    kind = context.operation.path.split("/")[2] if context.operation is not None else ""
    if kind in REAL_IDS and isinstance(sec_id, int) and sec_id % 4:
        path_parameters["sec_id"] = REAL_IDS[kind]
    return path_parameters
