"""Building the primary's ``launch`` command from a ``PUT /v1/primary/launch`` body (spp-api.md §6).

The command is ``launch ID NAME EAL... -- APP...``. EAL options are emitted in the fixed order of
:data:`EAL_OPTS` (not request order) and unknown ones are dropped; app options are filtered and
ordered by the per-program allow-list :data:`APP_OPTS`. A ``null`` or ``""`` value emits the flag
alone. All of this is SPP's behaviour, kept byte-for-byte.

Deliberate differences (SPP sent garbage or answered 500):

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

from typing import Any

from .errors import ApiError, KeyInvalid
from .validate import require

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
    "spp_nfv": ("-n", "-s", "--vhost-client"),
    "spp_vf": ("--client-id", "-s", "--vhost-client"),
    "spp_mirror": ("--client-id", "-s", "--vhost-client"),
    "spp_pcap": ("--client-id", "-s", "-c", "--out-dir", "--fsize"),
}
"""Application options allowed per program, in emission order (SPP's ``APP_OPTS``)."""

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
    eal_argv = _options("eal", eal, EAL_OPTS)
    app_argv = _options("app", app, APP_OPTS[name])
    command = f"launch {cid} {name} {' '.join(eal_argv)} -- {' '.join(app_argv)}"
    return cid, command
