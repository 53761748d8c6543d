"""Where a running bed is kept, so ``spp ps``, ``spp apply`` and ``spp down`` find it without
being told: one directory per user (``$SPP_BED_DIR``, else ``$XDG_RUNTIME_DIR/spp-bed``, else
``/run/spp-bed`` for root, else ``/tmp/spp-bed-<uid>``), mode 0700, holding

* ``bed.json`` — the bed as last applied (validated, defaults filled in);
* ``status.json`` — the supervisor's view: phase, pids, states, restarts (rewritten on change);
* ``control.sock`` — the supervisor's control socket (one JSON request, one JSON reply);
* ``supervisor.log`` and ``logs/<process>.log`` — what each process printed.

``spp down`` removes the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any


def default_state_dir() -> Path:
    if os.environ.get("SPP_BED_DIR"):
        return Path(os.environ["SPP_BED_DIR"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "spp-bed"
    if os.geteuid() == 0:
        return Path("/run/spp-bed")
    return Path(f"/tmp/spp-bed-{os.getuid()}")


class ControlError(RuntimeError):
    """The supervisor could not be reached, or refused the request (the message says why)."""


def control_path(state_dir: Path) -> Path:
    return state_dir / "control.sock"


def request(state_dir: Path, payload: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """Send one request to the bed's supervisor and return its reply."""
    path = control_path(state_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError as e:
            raise ControlError(f"no bed supervisor answers on {path}: {e.strerror or e}") from None
        s.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise ControlError("the bed supervisor closed the connection without answering")
    reply = json.loads(data)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "refused"))
    return dict(reply)


def read_json(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads(path.read_text()))
    return None


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` whole (readers never see half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
