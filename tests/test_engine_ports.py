"""Ring, null and pcap drivers, and the patch panel driving a real worker thread."""

from __future__ import annotations

import struct
import subprocess
import time

import numpy as np
import pytest

from spp.engine.offload import xstats_dict
from spp.engine.patchpanel import PatchPanel, PatchPanelError
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId
from spp.engine.ports import PortContext, PortError, open_port
from spp.engine.ports.base import RX, RX_DROP, TX, TX_DROP
from spp.engine.ports.pcap import GLOBAL_HEADER
from spp.engine.ring import Ring
from spp.engine.worker import Worker


def mixed_frames(count: int, seed: int = 7) -> list[bytes]:
    rng = np.random.default_rng(seed)
    sizes = rng.choice([60, 64, 60, 128, 512, 1514, 60, 61], count)
    return [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in sizes]


def write_pcap(path, frames: list[bytes]) -> None:
    with open(path, "wb") as f:
        f.write(GLOBAL_HEADER)
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1000 + i, i, len(fr), len(fr)) + fr)


def read_pcap(path) -> list[bytes]:
    raw = path.read_bytes()
    out, pos = [], 24
    while pos + 16 <= len(raw):
        incl = struct.unpack_from("<I", raw, pos + 8)[0]
        out.append(raw[pos + 16 : pos + 16 + incl])
        pos += 16 + incl
    return out


@pytest.fixture
def pcap_ctx(port_ctx: PortContext, tmp_path) -> PortContext:
    port_ctx.options["pcap_dir"] = str(tmp_path)
    return port_ctx


def test_ring_port_counters_are_the_shared_row(port_ctx):
    port = open_port(PortId("ring", 2), port_ctx)
    assert port.counters.base is not None
    port.counters[TX] += 5
    assert port_ctx.seg.ring_stats[port_ctx.client_id, 2, TX] == 5


def test_ring_beyond_those_created_is_refused(port_ctx):
    with pytest.raises(PortError, match=r"ring:9 does not exist.*ring:0..ring:3"):
        open_port(PortId("ring", 9), port_ctx)


def test_vhost_in_a_missing_directory_is_refused(port_ctx, tmp_path):
    port_ctx.options["vhost-dir"] = str(tmp_path / "missing")
    with pytest.raises(PortError, match=r"vhost:0: socket directory .*missing does not exist"):
        open_port(PortId("vhost", 0), port_ctx)
    with pytest.raises(PortError, match="memif ports are not supported"):
        open_port(PortId("memif", 0), port_ctx)


def test_null_port_is_a_source_and_a_sink(port_ctx):
    port = open_port(PortId("nullpmd", 0), port_ctx)
    bufs = port.rx_burst(64)
    assert len(bufs) == 64
    assert (port_ctx.pool.lengths[bufs] == 64).all()
    assert len(set(bufs.tolist())) == 64  # real, distinct pool buffers, now the caller's
    header = bytes.fromhex("02000000000202000000000188b5")
    assert all(port_ctx.pool.read(b)[:14] == header for b in bufs.tolist())
    assert port.tx_burst(bufs) == 64
    port_ctx.pool.flush()
    assert port_ctx.pool.shared_free == port_ctx.seg.spec.nb_bufs


def test_pcap_replays_and_records_byte_identical(pcap_ctx, tmp_path):
    frames = mixed_frames(1000)
    write_pcap(tmp_path / "spp-rx1.pcap", frames)
    port = open_port(PortId("pcap", 1), pcap_ctx)
    got: list[bytes] = []
    for _ in range(100):
        bufs = port.rx_burst(37)  # an odd burst size, so runs of equal records are split
        if len(bufs) == 0:
            break
        got += [pcap_ctx.pool.read(b) for b in bufs.tolist()]
        assert port.tx_burst(bufs) == len(bufs)
    assert got == frames
    assert len(port.rx_burst(32)) == 0  # end of file: no looping, as DPDK's pcap PMD
    port.close()
    assert read_pcap(tmp_path / "spp-tx1.pcap") == frames
    out = subprocess.run(["tcpdump", "-nr", str(tmp_path / "spp-tx1.pcap")], capture_output=True, text=True)
    assert out.returncode == 0
    assert sum(1 for line in out.stdout.splitlines() if line[:1].isdigit()) == 1000


def test_pcap_rx_file_is_created_empty_and_tx_overwritten(pcap_ctx, tmp_path):
    (tmp_path / "spp-tx4.pcap").write_bytes(b"old junk")
    port = open_port(PortId("pcap", 4), pcap_ctx)
    assert (tmp_path / "spp-rx4.pcap").read_bytes() == GLOBAL_HEADER
    assert (tmp_path / "spp-tx4.pcap").read_bytes() == GLOBAL_HEADER
    assert len(port.rx_burst(32)) == 0
    port.close()


def test_pcap_rejects_a_file_that_is_not_pcap(pcap_ctx, tmp_path):
    (tmp_path / "spp-rx5.pcap").write_bytes(b"this is not a capture file at all")
    with pytest.raises(PortError, match="not a classic pcap"):
        open_port(PortId("pcap", 5), pcap_ctx)


def test_pcap_carries_jumbo_frames_and_counts_what_no_buffer_holds(pcap_ctx, tmp_path):
    frames = [b"\x01" * 60, b"\x02" * 9000, b"\x03" * 70000, b"\x04" * 10, b"\x05" * 60]
    write_pcap(tmp_path / "spp-rx6.pcap", frames)
    port = open_port(PortId("pcap", 6), pcap_ctx)
    bufs = port.rx_burst(32)
    assert [pcap_ctx.pool.read(b) for b in bufs.tolist()] == [frames[0], frames[1], frames[4]]
    assert port.counters[RX_DROP] == 2
    assert xstats_dict(port.xstats) == {"rx_runt": 1, "rx_too_long": 1}
    pcap_ctx.pool.free(bufs)
    port.close()


@pytest.fixture
def panel(port_ctx):
    worker = Worker(port_ctx.pool)
    worker.start()
    p = PatchPanel(port_ctx, worker, ("ring", "nullpmd", "pcap"))
    yield p
    p.close()
    worker.stop()


def test_panel_refuses_bad_requests_with_reasons(panel):
    panel.add("ring:0")
    with pytest.raises(PatchPanelError, match="already added"):
        panel.add("ring:0")
    with pytest.raises(PatchPanelError, match="invalid port 'foo:1'"):
        panel.add("foo:1")
    with pytest.raises(PatchPanelError, match="ring:7 does not exist"):
        panel.add("ring:7")
    with pytest.raises(PatchPanelError, match="ring:1 is not added"):
        panel.patch("ring:0", "ring:1")
    with pytest.raises(PatchPanelError, match="cannot add tap:0"):
        panel.add("tap:0")
    with pytest.raises(PatchPanelError, match="not added"):
        panel.delete("ring:3")
    assert panel.port_names() == ["ring:0"]


def test_repatching_under_traffic_loses_nothing(panel, port_ctx):
    """A null source floods ring:0; the patch of ring:0 flips between ring:1 and ring:2 while the
    test drains both. Every packet that left ring:0 must be found in ring:1 or ring:2."""
    drain_pool = BufferPool(port_ctx.seg)  # this thread's own handle; the worker has the other
    for uid in ("nullpmd:0", "ring:0", "ring:1", "ring:2"):
        panel.add(uid)
    panel.patch("nullpmd:0", "ring:0")
    panel.patch("ring:0", "ring:1")
    r1, r2 = Ring(port_ctx.seg, 1), Ring(port_ctx.seg, 2)
    panel.forward()
    drained = 0
    deadline = time.monotonic() + 1.5
    flips = 0
    while time.monotonic() < deadline:
        for r in (r1, r2):
            b = r.dequeue(4096)
            drained += len(b)
            drain_pool.free(b)
        flips += 1
        panel.patch("ring:0", "ring:2" if flips % 2 else "ring:1")
    panel.stop()
    for r in (r1, r2):
        b = r.dequeue(1 << 20)
        drained += len(b)
        drain_pool.free(b)
    drain_pool.close()
    stats = {s["port"]: s for s in panel.port_stats()}
    delivered = stats["ring:1"]["tx"] + stats["ring:2"]["tx"]
    dropped = stats["ring:1"]["tx_drop"] + stats["ring:2"]["tx_drop"]
    assert flips > 20
    assert stats["ring:0"]["rx"] == delivered + dropped  # every burst either delivered or counted
    assert drained == delivered
    assert stats["nullpmd:0"]["rx"] == stats["ring:0"]["tx"] + stats["ring:0"]["tx_drop"]
    assert delivered > 10_000


def test_delete_removes_every_patch_to_and_from_the_port(panel):
    for uid in ("ring:0", "ring:1", "ring:2"):
        panel.add(uid)
    panel.patch("ring:0", "ring:1")
    panel.patch("ring:1", "ring:2")
    panel.patch("ring:2", "ring:0")
    panel.forward()
    panel.delete("ring:1")
    assert panel.patch_list() == [{"src": "ring:2", "dst": "ring:0"}]
    assert panel.forwarding  # unlike SPP's C nfv, deleting a port does not stop the others


def test_counters_record_rx_tx_and_drops(panel, port_ctx):
    panel.add("nullpmd:0")
    panel.add("ring:0")
    panel.patch("nullpmd:0", "ring:0")
    panel.forward()
    time.sleep(0.3)
    panel.stop()
    c = port_ctx.seg.ring_stats[port_ctx.client_id, 0]
    assert c[TX] == Ring(port_ctx.seg, 0).size  # filled, and no more
    assert c[TX_DROP] > 0  # the rest was refused and counted
    assert c[RX] == 0
