"""Building the primary's ``launch`` command from a ``PUT /v1/primary/launch`` body (spp-api.md §6).

The command is ``launch ID NAME EAL... -- APP...``. EAL options are emitted in the fixed order of
:data:`EAL_OPTS` (not request order), app options in the per-program order of :data:`APP_OPTS`. A
``null`` or ``""`` value emits the flag alone. For SPP's options this is SPP's command, byte for
byte.

Deliberate differences (SPP sent garbage, answered 500, or dropped what it did not know):

* An option the secondary does not know is a 400 naming it; SPP dropped it silently, so the
  process ran without what the user asked for. Other DPDK EAL options (``--main-lcore``,
  ``-a``, ...) and our processes' own app options (:data:`APP_EXTRA_OPTS`, e.g. ``--burst``) are
  passed on after SPP's.

* ``client_id`` must be an integer 1..127 (a string of digits is accepted), ``proc_name`` one of
  :data:`PROC_NAMES`; ``eal``/``app`` must be objects; a missing ``-c``/``-l``/``--lcores`` or
  ``--proc-type`` is a 400, not a silent 500.
* Option values must be one token (no whitespace): the primary splits the command on spaces, so
  ``"-l": "1, 2"`` would silently become two arguments.
* ``true`` emits the flag alone (like ``null``), ``false`` omits it; SPP emitted ``True``/``False``.
* If the app options carry the ID option (``-n`` for spp_nfv, ``--client-id`` otherwise) it must
  equal ``client_id``: the secondary would otherwise register under another ID than the one
  requested, and our primary (which waits for that registration) would time out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from spp.processes.options import EAL_OPTIONS

from .errors import ApiError, KeyInvalid
from .validate import require

if TYPE_CHECKING:
    from .registry import Proc, Registry

LOG = logging.getLogger(__name__)

POLL_INTERVAL = 0.1
"""How often spp-ctl asks the primary about a pending launch (each ask is one short command, so
the primary's other commands are never held up)."""

EAL_OPTS: tuple[str, ...] = (
    "-c", "-l", "--lcores", "--master-lcore", "-s",
    "-b", "--pci-blacklist", "-w", "--pci-whitelist", "--vdev", "-d", "--no-pci",
    "--proc-type",
    "-n", "-r", "-m", "--in-memory", "--iova-mode",
    "--no-shconf", "--no-huge", "--log-level", "--file-prefix",
    "--create-uio-dev", "--vmware-tsc-map", "--no-hpet", "--vfio-intr", "--base-virtaddr",
    "--legacy-mem", "--socket-mem", "--socket-limit", "--single-file-segments", "--huge-dir",
    "--huge-unlink", "--match-allocations", "--syslog",
)  # fmt: skip
"""EAL options spp-ctl passes on, in the order it emits them (SPP's ``EAL_OPTS``)."""

APP_OPTS: dict[str, tuple[str, ...]] = {
    "spp_nfv": ("-n", "-s", "--vhost-client", "--vhost-dir"),
    "spp_vf": ("--client-id", "-s", "--vhost-client", "--vhost-dir"),
    "spp_mirror": ("--client-id", "-s", "--vhost-client", "--vhost-dir"),
    "spp_pcap": ("--client-id", "-s", "-c", "--out-dir", "--fsize"),
}
"""Application options allowed per program, in emission order (SPP's ``APP_OPTS``)."""

APP_EXTRA_OPTS: dict[str, tuple[str, ...]] = {
    "spp_nfv": ("--burst", "--busy-poll-us", "--log-level"),
    "spp_vf": ("--burst", "--busy-poll-us", "--log-level"),
    "spp_mirror": ("--burst", "--busy-poll-us", "--log-level"),
    "spp_pcap": ("--format", "--filter", "--burst", "--queue", "--log-level"),
}
"""Options our secondaries accept beyond SPP's, emitted after those of :data:`APP_OPTS`."""

PROC_NAMES: tuple[str, ...] = tuple(APP_OPTS)

ID_OPTION = {"spp_nfv": "-n", "spp_vf": "--client-id", "spp_mirror": "--client-id", "spp_pcap": "--client-id"}
"""The app option that carries the secondary's ID."""

CLIENT_ID_MIN = 1
CLIENT_ID_MAX = 127
LCORE_OPTS = ("-c", "-l", "--lcores")


def client_id(value: Any) -> int:
    """``client_id`` as int 1..127; digits-only strings accepted (the SPP CLI sends ``"1"``)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise KeyInvalid("client_id", value)
    if not CLIENT_ID_MIN <= number <= CLIENT_ID_MAX:
        raise KeyInvalid("client_id", value)
    return number


def proc_name(value: Any) -> str:
    if not isinstance(value, str) or value not in PROC_NAMES:
        raise KeyInvalid("proc_name", value)
    return value


def _options(section: str, given: dict[str, Any], allowed: tuple[str, ...]) -> list[str]:
    """Flatten ``given`` into argv tokens, keeping only ``allowed`` keys in ``allowed`` order."""
    argv: list[str] = []
    for opt in allowed:
        if opt not in given:
            continue
        value = given[opt]
        if value is None or value == "" or value is True:
            argv.append(opt)
            continue
        if value is False:
            continue
        if isinstance(value, int | float):
            text = str(value)
        elif isinstance(value, str) and value.isascii() and value.isprintable() and " " not in value:
            text = value
        else:
            raise KeyInvalid(f"{section} {opt}", value)
        argv += [opt, text]
    return argv


def _refuse_unknown(section: str, name: str, given: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = [opt for opt in given if opt not in known]
    if unknown:
        what = "EAL" if section == "eal" else f"{name}"
        listed = ", ".join(repr(opt) for opt in unknown)
        raise ApiError(400, f"invalid key({section}): unknown {what} option {listed}.")


def build_launch(body: dict[str, Any]) -> tuple[int, str]:
    """Validate a launch body and return ``(client_id, command)``.

    Required keys are checked first (the caller does this before the primary lookup, as SPP).
    """
    require(body, ["client_id", "proc_name", "eal", "app"])
    cid = client_id(body["client_id"])
    name = proc_name(body["proc_name"])
    eal, app = body["eal"], body["app"]
    if not isinstance(eal, dict):
        raise KeyInvalid("eal", eal)
    if not isinstance(app, dict):
        raise KeyInvalid("app", app)
    if not any(opt in eal for opt in LCORE_OPTS):
        raise ApiError(400, "key(eal -c, -l or --lcores) required.")
    if "--proc-type" not in eal:
        raise ApiError(400, "key(eal --proc-type) required.")
    id_opt = ID_OPTION[name]
    if id_opt in app:
        given = app[id_opt]
        if str(given) != str(cid) and not (isinstance(given, str) and given.isdigit() and int(given) == cid):
            raise ApiError(400, f"invalid key(app {id_opt}): {given}. It must equal client_id {cid}.")
    eal_known = EAL_OPTS + tuple(sorted(EAL_OPTIONS - set(EAL_OPTS)))
    app_known = APP_OPTS[name] + APP_EXTRA_OPTS[name]
    _refuse_unknown("eal", name, eal, eal_known)
    _refuse_unknown("app", name, app, app_known)
    eal_argv = _options("eal", eal, eal_known)
    app_argv = _options("app", app, app_known)
    command = f"launch {cid} {name} {' '.join(eal_argv)} -- {' '.join(app_argv)}"
    return cid, command


async def await_registration(registry: Registry, primary: Proc, cid: int, launch_reply: Any) -> None:
    """Return once secondary ``cid`` has registered with spp-ctl; 400 with the primary's reason
    if the launch failed (the primary has then killed the child and freed the id).

    Our primary answers ``launch`` at once with the child's ``pid`` and reports on it through
    ``launch_status ID``. SPP's C primary answers without a ``pid`` and knows nothing more; as
    with SPP's spp-ctl, the request then ends there.
    """
    if not isinstance(launch_reply, dict) or "pid" not in launch_reply:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + registry.launch_timeout
    while registry.get(cid) is None:
        reply = await registry.command(primary, f"launch_status {cid}")
        if isinstance(reply, dict) and reply.get("state") in ("failed", "exited", "none"):
            message = reply.get("message") or f"secondary {cid} ended before it registered"
            raise ApiError(400, f"launch of secondary {cid} failed: {message}")
        if loop.time() > deadline:
            raise ApiError(
                504,
                f"secondary {cid} (pid {launch_reply['pid']}) did not register within "
                f"{registry.launch_timeout:g} s",
            )
        await asyncio.sleep(POLL_INTERVAL)
    LOG.info("secondary %d registered", cid)
