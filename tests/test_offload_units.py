"""Software checksum completion and segmentation (spp.engine.offload) against a reference built
frame by frame in plain Python, on a real shared segment."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from spp.engine import offload
from spp.engine.offload import GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, NEEDS_CSUM, XS, new_xstats, vnet_of
from spp.engine.pool import BufferPool

MACS = bytes.fromhex("02aa5500000202aa55000001")
SRC4, DST4 = bytes([198, 51, 100, 1]), bytes([198, 51, 100, 2])
SRC6, DST6 = bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "02")


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def l2(vlans: int, etype: int) -> bytes:
    tags = b"".join(struct.pack("!HH", 0x8100, 100 + i) for i in range(vlans))
    return MACS + tags + struct.pack("!H", etype)


def ip_header(v6: bool, proto: int, l4len: int, ident: int = 7) -> bytes:
    if v6:
        return struct.pack("!IHBB", 6 << 28, l4len, proto, 64) + SRC6 + DST6
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + l4len, ident, 0x4000, 64, proto, 0, SRC4, DST4)
    return h[:10] + struct.pack("!H", ~csum(h) & 0xFFFF) + h[12:]


def pseudo(v6: bool, proto: int, l4len: int) -> int:
    if v6:
        return csum(SRC6 + DST6 + struct.pack("!IxxxB", l4len, proto))
    return csum(SRC4 + DST4 + struct.pack("!xBH", proto, l4len))


def l4_segment(tcp: bool, payload: bytes, seq: int, flags: int = 0x18) -> bytes:
    if tcp:
        return struct.pack("!HHIIBBHHH", 40000, 80, seq, 1, 5 << 4, flags, 65535, 0, 0) + payload
    return struct.pack("!HHHH", 5353, 53, 8 + len(payload), 0) + payload


def finished(v6: bool, tcp: bool, vlans: int, payload: bytes, seq: int, flags: int, ident: int) -> bytes:
    """A frame as it must look on the wire: every length and checksum right."""
    proto = 6 if tcp else 17
    seg = l4_segment(tcp, payload, seq, flags)
    c = ~csum(struct.pack("!H", pseudo(v6, proto, len(seg))) + seg) & 0xFFFF
    if not tcp:
        c = c or 0xFFFF  # zero means "no checksum" in UDP
    at = 16 if tcp else 6
    seg = seg[:at] + struct.pack("!H", c) + seg[at + 2 :]
    return l2(vlans, 0x86DD if v6 else 0x0800) + ip_header(v6, proto, len(seg), ident) + seg


def partial(
    v6: bool, tcp: bool, vlans: int, payload: bytes, seq: int, flags: int = 0x18
) -> tuple[bytes, int]:
    """The frame as the kernel hands it with CHECKSUM_PARTIAL: pseudo-header sum in the field."""
    proto = 6 if tcp else 17
    seg = l4_segment(tcp, payload, seq, flags)
    at = 16 if tcp else 6
    seg = seg[:at] + struct.pack("!H", pseudo(v6, proto, len(seg))) + seg[at + 2 :]
    head = l2(vlans, 0x86DD if v6 else 0x0800) + ip_header(v6, proto, len(seg))
    return head + seg, len(head)


def set_vnet(
    pool: BufferPool, buf: int, flags: int, gso: int, hdr_len: int, gso_size: int, cs: int, co: int
) -> None:
    pool.vnet[buf] = np.frombuffer(struct.pack("<BBHHHH", flags, gso, hdr_len, gso_size, cs, co), np.uint8)


CASES = [(v6, tcp, vlans) for v6 in (False, True) for tcp in (True, False) for vlans in (0, 1, 2)]


@pytest.mark.parametrize(("v6", "tcp", "vlans"), CASES)
def test_partial_checksums_are_completed(segment, v6, tcp, vlans):
    pool = BufferPool(segment)
    frames, want = [], []
    for i, size in enumerate([1, 17, 200, 1400]):
        payload = bytes((i * 31 + j) & 0xFF for j in range(size))
        f, start = partial(v6, tcp, vlans, payload, 1000 + i)
        frames.append((f, start))
        want.append(finished(v6, tcp, vlans, payload, 1000 + i, 0x18, 7))
    bufs = pool.alloc_frames([f for f, _ in frames])
    for b, (_f, start) in zip(bufs.tolist(), frames, strict=True):
        set_vnet(pool, b, NEEDS_CSUM, 0, 0, 0, start, 16 if tcp else 6)
    xs = new_xstats()
    out = offload.finish(pool, bufs, xs)
    assert [pool.read(b) for b in out.tolist()] == want
    assert xs[XS["sw_csum"]] == 4
    assert not pool.vnet_word[out].any()
    pool.free(out)


@pytest.mark.parametrize(("v6", "tcp", "vlans"), CASES)
def test_aggregates_are_cut_into_wire_segments(segment, v6, tcp, vlans):
    pool = BufferPool(segment)
    mss = 1448
    payload = bytes((j * 7) & 0xFF for j in range(mss * 40 + 123))  # 41 segments, the last short
    agg, start = partial(v6, tcp, vlans, payload, 5000, flags=0x19)  # PSH|FIN|ACK
    plain = l2(0, 0x0800) + b"\0" * 50
    bufs = pool.alloc_frames([plain, agg, plain])
    assert bufs[1] >= pool.large_base  # an aggregate lives in a large buffer
    gso = GSO_UDP_L4 if not tcp else (GSO_TCPV6 if v6 else GSO_TCPV4)
    hdr = start + (20 if tcp else 8)
    set_vnet(pool, int(bufs[1]), NEEDS_CSUM, gso, hdr, mss, start, 16 if tcp else 6)
    large_free = pool.large_free
    xs = new_xstats()
    out = offload.finish(pool, bufs, xs)
    got = [pool.read(b) for b in out.tolist()]
    assert got[0] == plain and got[-1] == plain
    segs = got[1:-1]
    assert len(segs) == 41
    for k, s in enumerate(segs):
        piece = payload[k * mss : (k + 1) * mss]
        if tcp:
            flags = 0x19 if k == 40 else 0x10  # FIN and PSH only on the last segment
            want = finished(v6, tcp, vlans, piece, 5000 + k * mss, flags, 7 + k)
        else:
            want = finished(v6, tcp, vlans, piece, 0, 0, 7 + k)
        assert s == want, f"segment {k}"
    assert xs[XS["sw_gso"]] == 1 and xs[XS["sw_segments"]] == 41
    assert pool.large_free == large_free + 1  # the aggregate went back
    pool.free(out)


def test_nonsense_metadata_is_dropped_and_counted(segment):
    pool = BufferPool(segment)
    f, start = partial(False, True, 0, b"x" * 100, 1)
    bufs = pool.alloc_frames([f] * 5)
    b = bufs.tolist()
    set_vnet(pool, b[0], NEEDS_CSUM, 0, 0, 0, len(f), 16)  # csum_start beyond the frame
    set_vnet(pool, b[1], 0, 0x42, 0, 0, 0, 0)  # no such gso type
    set_vnet(pool, b[2], NEEDS_CSUM, GSO_TCPV4, start + 20, 0, start, 16)  # gso_size 0
    set_vnet(pool, b[3], 0x40, 0, 0, 0, 0, 0)  # unknown flag
    xs = new_xstats()
    free_before = pool.shared_free + pool._cached
    out = offload.finish(pool, bufs, xs)
    assert out.tolist() == [b[4]]
    assert xs[XS["tx_bad_vnet"]] == 4
    assert pool.shared_free + pool._cached == free_before + 4
    pool.free(out)


def test_an_aggregate_that_is_not_tcp_or_udp_is_dropped_and_counted(segment):
    pool = BufferPool(segment)
    f = l2(0, 0x0806) + b"\0" * 3000  # ARP, claiming to be a TCP aggregate
    bufs = pool.alloc_frames([f])
    set_vnet(pool, int(bufs[0]), 0, GSO_TCPV4, 54, 1448, 0, 0)
    xs = new_xstats()
    out = offload.finish(pool, bufs, xs)
    assert len(out) == 0
    assert xs[XS["tx_unsegmentable"]] == 1


def test_plain_bursts_pass_untouched_and_alloc_clears_metadata(segment):
    pool = BufferPool(segment)
    bufs = pool.alloc(64)
    vnet_of(pool).flags[bufs] = NEEDS_CSUM
    pool.free(bufs)
    again = pool.alloc(64)
    assert not pool.vnet_word[again].any()
    pool.lengths[again] = 60
    out = offload.finish(pool, again, new_xstats())
    assert out is again
    pool.free(again)


def test_deep_copies_of_large_buffers_carry_bytes_and_metadata(segment):
    from spp.engine.components import copy_frames

    pool = BufferPool(segment)
    agg, start = partial(False, True, 0, bytes(range(256)) * 200, 1)
    frames = [l2(0, 0x0800) + b"a" * 100, agg, l2(0, 0x0800) + b"b" * 1500]
    bufs = pool.alloc_frames(frames)
    set_vnet(pool, int(bufs[1]), NEEDS_CSUM, GSO_TCPV4, start + 20, 1448, start, 16)
    copies = copy_frames(pool, bufs)
    assert [pool.read(c) for c in copies.tolist()] == frames
    assert copies[1] >= pool.large_base and copies[1] != bufs[1]
    assert pool.vnet[copies].tolist() == pool.vnet[bufs].tolist()
    pool.write(int(copies[1]), b"changed" + agg[7:])
    assert pool.read(int(bufs[1])) == agg  # deep: an edit of the copy does not show
    pool.free(bufs)
    pool.free(copies)


def test_vlan_tags_on_large_frames_move_the_offload_offsets(segment):
    from spp.engine.vlan import push_tag, strip_tag

    pool = BufferPool(segment)
    payload = bytes(range(256)) * 20
    agg, start = partial(False, True, 0, payload, 1)
    small, sstart = partial(False, True, 0, b"x" * 100, 2)
    bufs = pool.alloc_frames([agg, small])
    for b, st in zip(bufs.tolist(), (start, sstart), strict=True):
        set_vnet(pool, b, NEEDS_CSUM, GSO_TCPV4 if b == bufs[0] else 0, st + 20, 1448, st, 16)
    assert len(push_tag(pool.data, pool.lengths, bufs, 0x0064, pool)) == 0
    tagged, tstart = partial(False, True, 1, payload, 1)
    assert pool.read(int(bufs[0])) == tagged
    v = vnet_of(pool)
    assert v.csum_start[bufs].tolist() == [tstart, sstart + 4]
    assert v.hdr_len[bufs[0]] == tstart + 20
    strip_tag(pool.data, pool.lengths, bufs, pool)
    assert pool.read(int(bufs[0])) == agg
    assert v.csum_start[bufs].tolist() == [start, sstart]
    out = offload.finish(pool, bufs, new_xstats())  # and the result still segments correctly
    assert len(out) == 5
    pool.free(out)


def test_range_sums_match_rfc1071_at_any_alignment_and_length():
    rng = np.random.default_rng(7)
    flat = rng.integers(0, 256, 20000, dtype=np.uint8)
    begin = rng.integers(0, 9000, 300)
    end = begin + rng.integers(0, 3000, 300)
    got = offload.range_sums(flat, begin, end).tolist()
    assert got == [csum(flat[b:e].tobytes()) if e > b else 0 for b, e in zip(begin, end, strict=True)]


@pytest.mark.parametrize("tcp", [True, False])
def test_a_checksum_that_comes_out_zero_is_0xffff_only_for_udp(segment, tcp):
    """TCP keeps 0x0000 (Wireshark calls 0xffff wrong there); UDP must send 0xffff."""
    pool = BufferPool(segment)
    payload = bytearray(b"\0" * 64)
    f, start = partial(False, tcp, 0, bytes(payload), 1)
    at = start + (16 if tcp else 6)
    bufs = pool.alloc_frames([f])
    set_vnet(pool, int(bufs[0]), NEEDS_CSUM, 0, 0, 0, start, 16 if tcp else 6)
    offload.finish(pool, bufs, new_xstats())
    # Adjust two payload bytes so that the full sum becomes 0xffff, i.e. the checksum 0.
    c = struct.unpack_from("!H", pool.read(int(bufs[0])), at)[0]
    want = 0 if tcp else 0xFFFF
    payload[0:2] = struct.pack("!H", c if c != 0xFFFF else 0)
    f, start = partial(False, tcp, 0, bytes(payload), 1)
    pool.write(int(bufs[0]), f)
    set_vnet(pool, int(bufs[0]), NEEDS_CSUM, 0, 0, 0, start, 16 if tcp else 6)
    offload.finish(pool, bufs, new_xstats())
    assert struct.unpack_from("!H", pool.read(int(bufs[0])), at)[0] == want
    pool.free(bufs)
