"""Replies in the format of SPP's spp_vf / spp_mirror / spp_pcap (their shared ``json_helper.c``).

Those processes write JSON with spaces inside brackets and after separators
(``{ "results": [ { "result": "success" } ] }``, an empty array as ``[  ]``) and send it unpadded.
spp-ctl accepts any JSON, but keeping the bytes identical lets tools that compare captures, and
SPP's own spp-ctl, see no difference.
"""

from __future__ import annotations

import json
from typing import Any


def spaced_json(value: Any) -> str:
    if isinstance(value, dict):
        if not value:
            return "{  }"
        return "{ " + ", ".join(f"{json.dumps(k)}: {spaced_json(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[ " + ", ".join(spaced_json(v) for v in value) + " ]"
    return json.dumps(value)


def success(**extra: Any) -> dict[str, Any]:
    return {"results": [{"result": "success"}], **extra}


def error(message: str) -> dict[str, Any]:
    """A failed command; spp-ctl answers ``400 command error: <message>``."""
    return {"results": [{"result": "error", "error_details": {"message": message}}]}


def client_id_reply(client_id: int, process_type: str) -> dict[str, Any]:
    return success(client_id=client_id, process_type=process_type)
