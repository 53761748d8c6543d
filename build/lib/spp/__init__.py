"""Soft Patch Panel in Python.

Subpackages, by role:

* :mod:`spp.engine` — the packet engine: shared buffer pool, rings, port drivers and the
  vectorised forwarding loop. Everything that touches a packet lives here.
* :mod:`spp.processes` — the SPP processes (``spp-primary``, ``spp-nfv``) that host the engine
  and speak SPP's wire protocol to spp-ctl.
* :mod:`spp.control` — the control plane: ``spp-ctl`` (REST + wire server) and the ``spp`` CLI.
* :mod:`spp.integrations` — tools around the panel (the demo, launchers).
"""

__version__ = "0.1.0"
