"""GuestMemory's address translation, the one every vhost copy trusts: the vector form
(``offsets``, bursts) and the Python-int form (``offset_one``, a lone packet) must agree on
every address, including QEMU's layout of regions with holes between them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

from spp.engine.virtio.memory import GuestMemory, Region

MiB = 1 << 20


@contextlib.contextmanager
def memory(layout: list[tuple[int, int]]) -> Iterator[tuple[GuestMemory, list[int]]]:
    """Guest memory of regions ``(gpa, size)``, each backed by a memfd of its own."""
    fds = [os.memfd_create(f"spp-test-mem{i}") for i in range(len(layout))]
    try:
        regions = []
        for fd, (gpa, size) in zip(fds, layout, strict=True):
            os.ftruncate(fd, size)
            regions.append(Region(gpa=gpa, size=size, uaddr=0x7F0000000000 + gpa, offset=0))
        mem = GuestMemory(regions, fds)
        try:
            yield mem, fds
        finally:
            mem.close()
    finally:
        for fd in fds:
            os.close(fd)


# QEMU's shape: low memory, a hole, the rest (here small, and not starting at 0)
HOLES = [(0x10000, MiB), (0x400000, 2 * MiB)]
TILED = [(0x10000, MiB), (0x10000 + MiB, MiB)]


def probes(layout: list[tuple[int, int]]) -> list[int]:
    """Addresses around and inside ``layout``: random ones, every edge and the byte before it."""
    rng = np.random.default_rng(11)
    lo, hi = layout[0][0] - 0x2000, layout[-1][0] + layout[-1][1] + 0x2000
    edges = [g for gpa, size in layout for g in (gpa, gpa + size)]
    return [*rng.integers(lo, hi, 3000).tolist(), *edges, *(e - 1 for e in edges), 0, 2**63]


def test_offset_one_agrees_with_offsets_across_holes() -> None:
    with memory(HOLES) as (mem, _):
        assert mem.single is None
        gpas = probes(HOLES)
        for length in (1, 14, 1514, 9000, MiB):
            off, ok = mem.offsets(np.array(gpas, np.uint64), length)
            for g, o, good in zip(gpas, off.tolist(), ok.tolist(), strict=True):
                assert mem.offset_one(g, length) == (o if good else -1), (hex(g), length)


def test_offset_one_takes_tiled_regions_as_one_stretch() -> None:
    """Regions that follow each other without a hole are one mapped stretch, as the burst fast
    paths take them (a copy may cross the boundary); nothing outside it is reachable."""
    with memory(TILED) as (mem, _):
        assert mem.single is not None
        start, end = TILED[0][0], TILED[-1][0] + TILED[-1][1]
        for length in (1, 14, 1514, 9000, MiB):
            for g in probes(TILED):
                inside = start <= g and g + length <= end
                assert mem.offset_one(g, length) == (g - mem.lo if inside else -1), (hex(g), length)


def test_offset_one_reaches_the_bytes_of_each_region() -> None:
    with memory(HOLES) as (mem, fds):
        for fd, (gpa, size) in zip(fds, HOLES, strict=True):
            at = mem.offset_one(gpa + size - 6, 6)
            assert at >= 0
            mem.mv[at : at + 6] = b"spp-ok"
            assert os.pread(fd, 6, size - 6) == b"spp-ok"
            assert mem.offset_one(gpa + size - 5, 6) == -1  # one byte past the region's end
        assert mem.offset_one(HOLES[0][0] + MiB, 1) == -1  # the hole
        assert mem.offset_one(HOLES[0][0] - 1, 1) == -1  # below the lowest region
