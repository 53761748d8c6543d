"""spp_pcap's pieces in one process: record building (classic pcap and pcapng), the capture filter,
the receive step's bounded hand-off and a writer's rotation. Outside readers (tcpdump, tshark,
the lz4 CLI) judge the files; tcpdump's own filter compiler is the oracle for the filter."""

from __future__ import annotations

import os
import queue
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from spp.engine.capfilter import FilterError, compile_filter
from spp.engine.pcapfile import GLOBAL_HEADER, pcap_records, pcapng_header, pcapng_records
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId
from spp.engine.ports import open_port
from spp.engine.ring import Ring
from spp.processes.pcap import END_OF_SESSION, FORMATS, CaptureWriter, ReceiveStep
from tests.pcaputil import (
    classic_frames,
    lz4_cli_decompress,
    lz4_py_decompress,
    make_traffic,
    tcpdump_count,
    tcpdump_hex,
    tcpdump_selects,
    tshark_frames,
)
from tests.test_engine_ports import mixed_frames, write_pcap

STAMP0 = 1_700_000_000_123_456_789


def load(pool: BufferPool, frames: list[bytes], stamps: np.ndarray | None = None) -> np.ndarray:
    bufs = pool.alloc_frames(frames)
    pool.stamps[bufs] = (
        STAMP0 + np.arange(len(frames), dtype=np.uint64) * 1_234_567 if stamps is None else stamps
    )
    return bufs


def reference_classic(frames: list[bytes], stamps: list[int]) -> bytes:
    out = b""
    for f, s in zip(frames, stamps, strict=True):
        out += struct.pack("<IIII", s // 10**9, s // 1000 % 10**6, len(f), len(f)) + f
    return out


def reference_pcapng(frames: list[bytes], stamps: list[int]) -> bytes:
    out = b""
    for f, s in zip(frames, stamps, strict=True):
        pad = -len(f) % 4
        total = 32 + len(f) + pad
        out += struct.pack("<7I", 6, total, 0, s >> 32, s & 0xFFFFFFFF, len(f), len(f))
        out += f + b"\0" * pad + struct.pack("<I", total)
    return out


@pytest.mark.parametrize(
    "sizes",
    [[64] * 300, [61] * 300, "mixed", "random", [2048, 14, 2048]],
    ids=["uniform64", "uniform61", "mixed", "random", "extremes"],
)
def test_records_match_a_per_packet_reference_in_both_formats(pool, sizes):
    rng = np.random.default_rng(5)
    if sizes == "mixed":
        frames = mixed_frames(300, seed=3)
    elif sizes == "random":
        frames = [rng.integers(0, 256, int(n), np.uint8).tobytes() for n in rng.integers(14, 2049, 300)]
    else:
        frames = [rng.integers(0, 256, n, np.uint8).tobytes() for n in sizes]
    bufs = load(pool, frames)
    stamps = pool.stamps[bufs].tolist()
    out, sizes_ = pcap_records(pool.data, bufs, pool.lengths[bufs], pool.stamps[bufs])
    assert out.tobytes() == reference_classic(frames, stamps)
    assert int(sizes_.sum()) == len(out)
    out, sizes_ = pcapng_records(pool.data, bufs, pool.lengths[bufs], pool.stamps[bufs])
    assert out.tobytes() == reference_pcapng(frames, stamps)
    assert int(sizes_.sum()) == len(out)
    pool.free(bufs)


def test_outside_readers_agree_on_both_formats(pool, tmp_path):
    frames = mixed_frames(200, seed=8)
    bufs = load(pool, frames)
    st = pool.stamps[bufs]
    classic = tmp_path / "a.pcap"
    classic.write_bytes(GLOBAL_HEADER + pcap_records(pool.data, bufs, pool.lengths[bufs], st)[0].tobytes())
    ng = tmp_path / "a.pcapng"
    ng.write_bytes(
        pcapng_header("ring:3") + pcapng_records(pool.data, bufs, pool.lengths[bufs], st)[0].tobytes()
    )
    for path in (classic, ng):
        assert tcpdump_count(path) == 200
        assert tcpdump_hex(path) == frames
    r = subprocess.run(["tcpdump", "-r", str(ng), "-tt", "--nano", "-c", "1"], capture_output=True, text=True)
    assert r.stdout.startswith(f"{STAMP0 // 10**9}.{STAMP0 % 10**9:09d} "), r.stdout
    seen = tshark_frames(ng)
    if seen is not None:  # tshark: nanoseconds kept, interface named after the port
        assert [f for _, f in seen] == frames
        assert seen[0][0] == f"{STAMP0 // 10**9}.{STAMP0 % 10**9:09d}"
    pool.free(bufs)


# -- the filter -----------------------------------------------------------------------------------

# Expressions whose meaning is the same in tcpdump for untagged frames (see spp.engine.capfilter),
# and where tcpdump spells them differently, (ours, tcpdump's).
TCPDUMP_SAME: list[str | tuple[str, str]] = [
    "ip",
    "ip6",
    "arp",
    "tcp",
    "udp",
    "icmp",
    "port 80",
    "tcp port 80",
    "udp dst port 53",
    "src port 22",
    "tcp src port 8080 or icmp",
    "ip src 10.0.0.1",
    "ip dst host 10.0.0.2",
    "ip host 10.1.2.3",
    "ip src net 10.0.0.0/16",
    "ip net 10.0.0.0/8 and dst port 80",
    "ether src 02:aa:55:00:00:01",
    "ether dst ff:ff:ff:ff:ff:ff",
    "ether proto 0x88b5",
    ("ether proto ip6", r"ether proto \ip6"),  # tcpdump wants the backslash before a name
    "(tcp or udp) and port 443",
    "ip and not tcp",
    "ip && !(ether dst ff:ff:ff:ff:ff:ff) || arp",
    "arp or udp and ether src 02:aa:55:00:00:02",  # equal precedence: (arp or udp) and ...
    "ip6 and (tcp port 22 or udp port 53)",
]


def test_filter_selects_what_tcpdump_selects(pool, tmp_path):
    frames = make_traffic(1500, seed=21)
    path = tmp_path / "mix.pcap"
    write_pcap(path, frames)
    bufs = load(pool, frames)
    for entry in TCPDUMP_SAME:
        expr, theirs = entry if isinstance(entry, tuple) else (entry, entry)
        mask = compile_filter(expr).match(pool.data, bufs, pool.lengths[bufs])
        assert np.nonzero(mask)[0].tolist() == tcpdump_selects(path, theirs), expr
    pool.free(bufs)


def _untag(frame: bytes) -> tuple[bytes, int | None]:
    """The frame without its (up to two) VLAN tags, and the outer VID."""
    vid = None
    for _ in range(2):
        if len(frame) >= 18 and frame[12:14] in (b"\x81\x00", b"\x88\xa8"):
            vid = vid if vid is not None else struct.unpack_from("!H", frame, 14)[0] & 0xFFF
            frame = frame[:12] + frame[16:]
    return frame, vid


def test_filter_looks_through_vlan_tags(pool, tmp_path):
    """Tagged frames are judged by what follows the tags: our result on the tagged traffic equals
    tcpdump's on the same frames with the tags removed; ``vlan [N]`` tests the outer tag."""
    frames = make_traffic(1500, seed=22, vlan=True)
    untagged, vids = zip(*(_untag(f) for f in frames), strict=True)
    assert sum(v is not None for v in vids) > 300
    path = tmp_path / "untagged.pcap"
    write_pcap(path, list(untagged))
    bufs = load(pool, frames)
    lengths = pool.lengths[bufs]
    for expr in ["ip src 10.0.0.1 and port 80", "udp", "arp or icmp", "ether proto 0x88b5", "ip6 and tcp"]:
        mask = compile_filter(expr).match(pool.data, bufs, lengths)
        assert np.nonzero(mask)[0].tolist() == tcpdump_selects(path, expr), expr
    udp = set(tcpdump_selects(path, "udp"))
    mask = compile_filter("vlan 100 and udp").match(pool.data, bufs, lengths)
    assert np.nonzero(mask)[0].tolist() == sorted(i for i in udp if vids[i] == 100)
    mask = compile_filter("not vlan").match(pool.data, bufs, lengths)
    assert np.nonzero(mask)[0].tolist() == [i for i, v in enumerate(vids) if v is None]
    pool.free(bufs)


@pytest.mark.parametrize(
    "expr,message",
    [
        ("", "empty filter"),
        ("ip src", "ends too early"),
        ("ip src 300.1.1.1", "'300.1.1.1' is not an IPv4 address"),
        ("port 70000", "port 70000 out of range"),
        ("tcp port http", "'http' is not a valid port"),
        ("foo", "unknown primitive 'foo'"),
        ("tcp and", "ends too early"),
        ("(ip", "expected ')'"),
        ("ip )", "unexpected ')'"),
        ("ether src 11:22", "'11:22' is not a MAC address"),
        ("vlan 5000", "VLAN id 5000 out of range"),
        ("ip; rm -rf /", "unexpected character ';'"),
        ("$(reboot)", "unexpected character '$'"),
        ("ip or " * 300 + "ip", "longer than 1024"),
        ("(" * 40 + "ip" + ")" * 40, "nested deeper than 32"),
    ],
)
def test_bad_filters_are_refused_with_a_reason(expr, message):
    with pytest.raises(FilterError, match=None) as e:
        compile_filter(expr)
    assert message in str(e.value)


# -- receive step and writer ----------------------------------------------------------------------


def test_a_full_hand_off_queue_drops_and_counts_never_silently(port_ctx, pool):
    seg = port_ctx.seg
    ring = Ring(seg, 0)
    frames = mixed_frames(300, seed=4)
    assert ring.enqueue(load(pool, frames)) == 300
    q: queue.SimpleQueue = queue.SimpleQueue()
    step = ReceiveStep(open_port(PortId("ring", 0), port_ctx), q, capacity=100)
    assert step.run(256) == 256
    assert (step.received, step.queued, step.dropped) == (256, 100, 156)
    assert step.run(256) == 44  # the rest: nothing fits while the writers have not caught up
    assert (step.received, step.queued, step.dropped) == (300, 100, 200)
    queued = q.get_nowait()
    assert [pool.read(b) for b in queued.tolist()] == frames[:100]  # in order, the first ones kept
    assert seg.ring_stats[port_ctx.client_id, 0, 0] == 300  # rx counted on the shared ring row
    pool.free(queued)
    pool.flush()
    assert pool.shared_free == seg.spec.nb_bufs  # every dropped buffer went back to the pool


def capture_stub(out_dir: Path, fsize: int, fmt: str = "pcap", flt: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        out_dir=out_dir,
        out_fd=os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC),  # as Pcap opens it
        fsize=fsize,
        format=FORMATS[fmt],
        filter=compile_filter(flt) if flt else None,
        port_tag="ring0",
        port_uid=PortId("ring", 0),
    )


def run_session(writer: CaptureWriter, q: queue.SimpleQueue, bursts: list[np.ndarray]) -> None:
    writer.open_session("20240101000000")
    writer.ended.clear()
    writer.resume.set()
    for b in bursts:
        q.put(b)
    q.put(END_OF_SESSION)
    assert writer.ended.wait(10)


@pytest.fixture
def writer_for(segment):
    made: list[CaptureWriter] = []

    def make(cap: SimpleNamespace) -> tuple[CaptureWriter, queue.SimpleQueue]:
        q: queue.SimpleQueue = queue.SimpleQueue()
        w = CaptureWriter(1, None, segment, q, cap)  # type: ignore[arg-type]
        w.start()
        made.append(w)
        return w, q

    yield make
    for w in made:
        w.quit = True
        w.resume.set()
        w.join(5)
        w.pool.close()


def test_writer_rotates_on_uncompressed_size_and_never_overwrites(pool, tmp_path, writer_for):
    frames = mixed_frames(400, seed=6)
    fsize = 8000
    (tmp_path / "spp_pcap.20240101000000.ring0.1.1.pcap.lz4").write_bytes(b"an earlier run")
    w, q = writer_for(capture_stub(tmp_path, fsize))
    bufs = load(pool, frames)
    run_session(w, q, [bufs[:150], bufs[150:151], bufs[151:]])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if n.endswith(".tmp")]
    assert (tmp_path / names[0]).read_bytes() == b"an earlier run"  # seq 1 was taken: left alone
    seqs = sorted(int(n.split(".")[4]) for n in names[1:])
    assert seqs == list(range(2, 2 + len(seqs))) and len(seqs) > 5
    got = []
    for seq in seqs:
        path = tmp_path / f"spp_pcap.20240101000000.ring0.1.{seq}.pcap.lz4"
        raw = lz4_py_decompress(path)
        assert len(raw) <= fsize
        got += [f for _, f in classic_frames(raw)]
    assert got == frames
    assert (w.written, w.done, w.filename) == (400, 400, "")


def test_writer_filters_and_a_record_larger_than_fsize_gets_a_file_alone(pool, tmp_path, writer_for):
    frames = [b"\x02" * 12 + b"\x88\xb5" + bytes(n - 14) for n in (60, 1500, 60)]
    arp = [f for f in make_traffic(200, seed=1) if f[12:14] == b"\x08\x06"]
    assert arp
    w, q = writer_for(capture_stub(tmp_path, fsize=200, fmt="pcapng", flt="not arp"))
    run_session(w, q, [load(pool, frames[:1] + arp + frames[1:])])
    assert w.filtered == len(arp)
    files = sorted(tmp_path.iterdir(), key=lambda p: int(p.name.split(".")[4]))
    assert [p.name.split(".", 5)[5] for p in files] == ["pcapng.lz4"] * 3
    for path, frame in zip(files, frames, strict=True):
        out = tmp_path / (path.name + ".pcapng")
        lz4_cli_decompress(path, out)
        assert tcpdump_hex(out) == [frame]
        out.unlink()


def test_writer_that_cannot_write_counts_drops_and_says_why(pool, tmp_path, writer_for):
    out_dir = tmp_path / "gone"
    out_dir.mkdir()
    w, q = writer_for(capture_stub(out_dir, fsize=1000))
    w.open_session("20240101000000")
    w.ended.clear()
    w.resume.set()
    os.unlink(w.filename + ".tmp")
    out_dir.rmdir()  # the next rotation cannot create its file
    frames = mixed_frames(100, seed=2)
    q.put(load(pool, frames))
    q.put(END_OF_SESSION)
    assert w.ended.wait(10)
    assert w.error.startswith(str(out_dir)) and "No such file or directory" in w.error
    assert w.written + w.dropped == 100 and w.dropped > 0
    assert w.done == 100  # all buffers were freed all the same
