"""spp_mirror: duplicate a stream, for monitoring (TaaS) or recording.

``spp-mirror [EAL] -- --client-id ID -s HOST:PORT [--vhost-client]``

Same process model, commands and replies as spp_vf (:mod:`spp.processes.vf`) with one component
type, ``mirror``: one rx port and two tx ports; every packet goes to the first tx port and a deep
copy of it, in a buffer of its own, to the second. There is no classifier table.
"""

from __future__ import annotations

import sys

from spp.engine.components import MIRROR
from spp.processes.worker_commands import WorkerSecondary, run_main


class Mirror(WorkerSecondary):
    process_type = "mirror"
    kinds = {MIRROR: MIRROR}
    has_table = False


def main(argv: list[str] | None = None) -> int:
    return run_main(Mirror, "spp-mirror", argv)


if __name__ == "__main__":
    sys.exit(main())
