"""Byte counters beside the packet counters: rx_bytes/tx_bytes per port, counted per burst, the
refused remainder of a burst not counted as sent, and the worker's patch route counting the same
way as ``forward_burst``."""

from __future__ import annotations

import numpy as np

from spp.engine.patchpanel import PatchPanel
from spp.engine.portid import PortId
from spp.engine.ports import PortContext, open_port
from spp.engine.ports.base import RX, RX_BYTES, TX, TX_BYTES, TX_DROP, forward_burst
from spp.engine.ring import Ring
from spp.engine.worker import Worker
from spp.integrations.testbed import wait_for


def frames_of(sizes: list[int]) -> list[bytes]:
    return [bytes([i % 251]) * n for i, n in enumerate(sizes)]


def test_forward_burst_counts_bytes_and_not_the_refused_ones(port_ctx: PortContext) -> None:
    pool, seg = port_ctx.pool, port_ctx.seg
    src, dst = open_port(PortId("ring", 0), port_ctx), open_port(PortId("ring", 1), port_ctx)
    ring0, ring1 = Ring(seg, 0), Ring(seg, 1)
    # ring:1 has room for 3 more frames only: the rest of the burst is refused.
    filler = pool.alloc_frames(frames_of([60] * (ring1.size - 3)))
    assert ring1.enqueue(filler) == len(filler)
    sizes = [60, 1514, 128, 64, 999, 300]
    assert ring0.enqueue(pool.alloc_frames(frames_of(sizes))) == len(sizes)

    assert forward_burst(src, dst, 32) == len(sizes)

    assert int(src.counters[RX]) == len(sizes)
    assert int(src.counters[RX_BYTES]) == sum(sizes)
    assert int(dst.counters[TX]) == 3 and int(dst.counters[TX_DROP]) == 3
    assert int(dst.counters[TX_BYTES]) == sum(sizes[:3])
    # The shared rows the primary sums are the same memory.
    assert int(seg.ring_stats[port_ctx.client_id, 0, RX_BYTES]) == sum(sizes)
    assert int(seg.ring_stats[port_ctx.client_id, 1, TX_BYTES]) == sum(sizes[:3])
    pool.free(ring1.dequeue(ring1.size))
    src.close()
    dst.close()


def test_patched_route_counts_bytes_in_the_worker(port_ctx: PortContext) -> None:
    worker = Worker(port_ctx.pool)
    worker.start()
    panel = PatchPanel(port_ctx, worker, ("ring", "nullpmd"))
    try:
        for uid in ("ring:0", "ring:2"):
            panel.add(uid)
        panel.patch("ring:0", "ring:2")
        panel.forward()
        feeder = type(port_ctx.pool)(port_ctx.seg)  # this thread's own pool handle
        sizes = list(np.random.default_rng(3).integers(60, 1515, 500))
        Ring(port_ctx.seg, 0).enqueue(feeder.alloc_frames(frames_of([int(n) for n in sizes])))
        stats = port_ctx.seg.ring_stats[port_ctx.client_id]
        wait_for(lambda: int(stats[2, TX]) == len(sizes), 10, "500 frames through ring:0 -> ring:2")
        assert int(stats[0, RX_BYTES]) == int(stats[2, TX_BYTES]) == sum(int(n) for n in sizes)
        entry = {e["port"]: e for e in panel.port_stats()}["ring:2"]
        assert (entry["tx"], entry["tx_bytes"]) == (len(sizes), sum(int(n) for n in sizes))
        panel.stop()
        feeder.free(Ring(port_ctx.seg, 2).dequeue(4096))
        feeder.close()
    finally:
        panel.close()
        worker.stop()
