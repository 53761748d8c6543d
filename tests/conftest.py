"""Shared fixtures: a private shared segment per test, and a per-test pool handle (the agent
tests' come from :mod:`tests.agentbed`); and the session check that the run leaves nothing
behind (:mod:`tests.leakcheck`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from spp.engine.pool import BufferPool
from spp.engine.ports.base import PortContext
from spp.engine.shm import PhyInfo, Segment, SegmentSpec
from tests.leakcheck import pytest_sessionfinish, pytest_sessionstart, run_token

#: the spp-agent tests' ``etcd`` and ``host`` fixtures live with the rest of their bed
pytest_plugins = ["tests.agentbed"]


def unique_prefix(tag: str = "t") -> str:
    """A file prefix of this run's own: it carries the run token the leak check looks for."""
    return f"pyt{tag}{run_token()}{uuid.uuid4().hex[:6]}"


@pytest.fixture
def make_segment() -> Iterator:
    """Factory: ``make_segment(nb_rings=4, phys=[PhyInfo('veth0')])``; removed after the test."""
    made: list[Segment] = []

    def make(**kw: object) -> Segment:
        kw.setdefault("nb_bufs", 8192)
        kw.setdefault("nb_rings", 4)
        kw.setdefault("primary_pid", os.getpid())
        spec = SegmentSpec(prefix=unique_prefix(), **kw)  # type: ignore[arg-type]
        seg = Segment.create(spec)
        made.append(seg)
        return seg

    yield make
    for seg in made:
        seg.unlink()
        seg.close()


@pytest.fixture
def segment(make_segment) -> Segment:
    return make_segment()


@pytest.fixture
def pool(segment: Segment) -> Iterator[BufferPool]:
    p = BufferPool(segment)
    yield p
    p.close()


@pytest.fixture
def port_ctx(segment: Segment, pool: BufferPool) -> PortContext:
    return PortContext(seg=segment, pool=pool, client_id=1)


__all__ = ["PhyInfo", "pytest_sessionfinish", "pytest_sessionstart", "unique_prefix"]


@pytest.fixture(scope="session")
def vm_image(tmp_path_factory: pytest.TempPathFactory):
    """A guest image from ``spp vm image`` (kernel + initramfs), built once per run."""
    from spp.integrations.vm.image import build_image

    out = tmp_path_factory.mktemp("vm-image")
    build_image(out)
    return out


@pytest.fixture
def vm_state(tmp_path: Path) -> Iterator[Path]:
    """A state directory for ``spp vm``; every VM still listed in it is stopped afterwards."""
    from spp.integrations.vm import manager

    state = tmp_path / "vms"
    yield state
    for st in manager.list_vms(state):
        manager.stop(state, st["id"])
