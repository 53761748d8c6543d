"""spp_vf: a pseudo SR-IOV switch of components wired at run time.

``spp-vf [EAL] -- --client-id ID -s HOST:PORT [--vhost-client] [--vhost-dir DIR]``

The first lcore (``-l``) is the master: it answers spp-ctl. Every other lcore gets a worker
thread that runs the components started on it (``component start NAME LCORE TYPE``) one after
the other: ``forward``, ``merge`` and ``classifier`` (also ``classifier_mac``, its old name).
Ports are ``phy:N``, ``ring:N`` and ``vhost:N`` (vhost-user sockets for VMs and containers).
The classifier steers by destination MAC and VLAN id; ports may push, rewrite or strip an 802.1Q
tag on the way in or out. See :mod:`spp.engine.components`.
"""

from __future__ import annotations

import sys

from spp.engine.components import CLASSIFIER, FORWARD, MERGE
from spp.processes.worker_commands import WorkerSecondary, run_main


class Vf(WorkerSecondary):
    process_type = "vf"
    kinds = {FORWARD: FORWARD, MERGE: MERGE, CLASSIFIER: CLASSIFIER, "classifier_mac": CLASSIFIER}
    has_table = True


def main(argv: list[str] | None = None) -> int:
    return run_main(Vf, "spp-vf", argv)


if __name__ == "__main__":
    sys.exit(main())
