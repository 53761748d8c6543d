"""What one SPP instance owns on the host, named from its ``--file-prefix``.

Two instances (a primary and its secondaries each) run side by side when they differ in file
prefix and control ports; nothing below may then be shared between them. The default prefix
``spp`` keeps the natural names (``vtapN``, ``/tmp/spp-log``); any other prefix gets its own.
Paths that SPP users and networking-spp rely on (pcap ports' ``/tmp/spp-rxN.pcap`` and
``/tmp/spp-txN.pcap``) keep SPP's defaults and are set per instance with options instead.

=====================  ===============================  ==================================
what                   default prefix ``spp``           prefix ``P``
=====================  ===============================  ==================================
shared segment         ``/dev/shm/spp_spp.seg``         ``/dev/shm/spp_P.seg``
secondaries' logs      ``/tmp/spp-log/``                ``/tmp/spp-log-P/``
TAP of ``tap:N``       ``vtapN``                        ``P-tapN``, or ``vt<hash>-N`` when
                                                        that would not be a valid name
=====================  ===============================  ==================================
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

DEFAULT_FILE_PREFIX = "spp"

#: Linux interface names hold at most IFNAMSIZ - 1 characters.
IFNAME_MAX = 15

# Characters that are safe in a file name and in an interface name (no '/', ':', whitespace).
_PREFIX_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def check_file_prefix(prefix: str) -> str:
    """``prefix`` if it can name files and interfaces; ValueError saying why otherwise."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"invalid file prefix '{prefix}': use 1 to 64 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    return prefix


def log_dir(prefix: str) -> Path:
    """Where a primary started with ``prefix`` puts the logs of the secondaries it launches."""
    return Path("/tmp/spp-log" if prefix == DEFAULT_FILE_PREFIX else f"/tmp/spp-log-{prefix}")


def tap_ifname(prefix: str, num: int) -> str:
    """The TAP interface of ``tap:num`` for an instance: ``vtapN`` for the default prefix.

    Other prefixes get ``<prefix>-tapN`` when it fits IFNAMSIZ, else ``vt<8 hex of a hash of the
    prefix>-N``. The forms cannot meet: only the first has no '-', only the second ends in
    ``-tap<digits>``, and the third has a hex digit, not ``tap``, before its last '-'.
    """
    if prefix == DEFAULT_FILE_PREFIX:
        return f"vtap{num}"
    readable = f"{prefix}-tap{num}"
    if len(readable) <= IFNAME_MAX and _PREFIX_RE.fullmatch(prefix):
        return readable
    digest = hashlib.blake2s(prefix.encode(), digest_size=4).hexdigest()
    return f"vt{digest}-{num}"
