"""Benchmark: software offload work (spp.engine.offload.finish) on whole bursts, in-process.

    PYTHONPATH=. python bench/offload_sw.py [--runs 5] [--bursts 50]

What a port without offload metadata (a pcap file, spp_pcap) pays per burst: (1) completing the
partial TCP checksums of 256 frames of 1,514 bytes; (2) segmenting 32 TCP/IPv4 aggregates of
64,000 payload bytes (MSS 1,448: 45 segments each) into wire frames with full checksums. Reports
medians over ``--runs`` of MB of frame data processed per second, and the per-burst time.
Everything runs on a private shared segment, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import time

import numpy as np

from spp.engine import offload
from spp.engine.offload import GSO_TCPV4, NEEDS_CSUM, new_xstats
from spp.engine.pool import BufferPool
from spp.engine.shm import Segment, SegmentSpec


def tcp_frame(payload_len: int) -> tuple[bytes, int]:
    eth = bytes.fromhex("02aa5500000202aa550000010800")
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        40 + payload_len,
        1,
        0x4000,
        64,
        6,
        0,
        b"\xc6\x33\x64\x01",
        b"\xc6\x33\x64\x02",
    )
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 1, 5 << 4, 0x18, 65535, 0x1234, 0)
    body = bytes((i * 7) & 0xFF for i in range(payload_len))
    return eth + ip + tcp + body, len(eth) + len(ip)


def run(pool: BufferPool, frame: bytes, start: int, count: int, gso: bool, bursts: int) -> float:
    hdr = struct.pack(
        "<BBHHHH", NEEDS_CSUM, GSO_TCPV4 if gso else 0, start + 20, 1448 if gso else 0, start, 16
    )
    total = 0.0
    for _ in range(bursts):
        bufs = pool.alloc_frames([frame] * count)
        pool.vnet[bufs] = np.frombuffer(hdr, np.uint8)
        t0 = time.perf_counter()
        out = offload.finish(pool, bufs, new_xstats())
        total += time.perf_counter() - t0
        pool.free(out)
    return total / bursts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bursts", type=int, default=50)
    args = ap.parse_args()
    seg = Segment.create(SegmentSpec(prefix=f"benchol{os.getpid()}", nb_bufs=16384, nb_rings=1))
    pool = BufferPool(seg)
    try:
        for name, plen, count, gso in (
            ("checksum 256 x 1514 B", 1460, 256, False),
            ("segment 32 x 64 KB", 64000, 32, True),
        ):
            frame, start = tcp_frame(plen)
            per_burst = [run(pool, frame, start, count, gso, args.bursts) for _ in range(args.runs)]
            med = statistics.median(per_burst)
            mbps = len(frame) * count / med / 1e6
            print(
                f"{name:24s} {med * 1e3:7.2f} ms/burst  {mbps:8.1f} MB/s  runs: "
                + ", ".join(f"{t * 1e3:.2f}" for t in per_burst)
            )
    finally:
        pool.close()
        seg.close()
        seg.unlink()


if __name__ == "__main__":
    main()
