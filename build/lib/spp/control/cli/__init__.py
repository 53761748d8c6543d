"""The ``spp`` command line interface: SPP's interactive shell, rebuilt on ``cmd.Cmd`` + httpx.

It speaks only spp-ctl's REST API (``/v1/...``), like SPP's ``src/spp.py``, so it works with our
spp-ctl and with SPP's own. Layout:

* :mod:`.main` -- argument parsing, start-up probe, batch vs interactive mode, exit status.
* :mod:`.shell` -- the ``cmd.Cmd`` subclass: common commands, history, record/playback.
* :mod:`.client` -- the REST wrapper; every HTTP failure becomes one :class:`~.client.CtlError`.
* :mod:`.commands` -- ``pri``, ``nfv``, ``vf``/``mirror``/``pcap``, ``server``, file helpers.
* :mod:`.topo` -- the topology as terminal text, DOT, images, JSON/YAML.
* :mod:`.config` -- the run-time settings of SPP's ``default.yml``.
"""
