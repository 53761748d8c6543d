"""Containers on the panel's ports: ``sppc`` (SPP's container tools) and its Python API.

* :mod:`.launch`: the ``podman run`` / ``docker run`` command of an app (:func:`build`, no side
  effects), and :func:`start` / :func:`stop` / :func:`state` of a container by name;
* :mod:`.images`: ``sppc build``, the image from Debian packages and this project, cached by hash;
* :mod:`.engine`: podman (with runc) or docker (a dockerd of our own) behind one small interface;
* :mod:`.cli`: the ``sppc`` command line.

A bed names a container by the same words as ``sppc app``::

    launch = build("testpmd", ["-l", "0-1", "-d", "vhost:1", "--name", "tp1", "--", "-a"])
    start(launch); ...; stop(launch.name)
"""

from spp.integrations.containers.engine import Engine, EngineError
from spp.integrations.containers.images import DEFAULT_IMAGE, BuildError
from spp.integrations.containers.launch import APPS, Launch, SppcError, build, start, state, stop

__all__ = [
    "APPS",
    "DEFAULT_IMAGE",
    "BuildError",
    "Engine",
    "EngineError",
    "Launch",
    "SppcError",
    "build",
    "start",
    "state",
    "stop",
]
