"""spp_vf's pieces on bytes: VLAN push/rewrite/strip, the classifier lookup, the command parser."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from spp.engine.classifier import (
    DROP,
    FLOOD,
    UNTAGGED,
    ClassifierTable,
    Entry,
    FrameWords,
    format_mac,
    parse_mac,
)
from spp.engine.portid import PortId
from spp.engine.vlan import ADD, DEL, VlanOp, push_tag, strip_tag
from spp.processes.worker_commands import (
    CommandError,
    ComponentStart,
    ComponentStop,
    PortCommand,
    Simple,
    TableCommand,
    parse,
)
from tests.netutil import make_frame

VF_KINDS = {
    "forward": "forward",
    "merge": "merge",
    "classifier": "classifier",
    "classifier_mac": "classifier",
}
MAC_A, MAC_B = bytes.fromhex("525400123456"), bytes.fromhex("525400123458")
BCAST = b"\xff" * 6


def tag(vid: int, pcp: int = 0) -> tuple[int, int]:
    return (0x8100, (pcp << 13) | vid)


def load(pool, frames: list[bytes]) -> np.ndarray:
    return pool.alloc_frames(frames)


def read(pool, bufs: np.ndarray) -> list[bytes]:
    return [pool.read(int(b)) for b in bufs]


# -- VLAN operations -----------------------------------------------------------------------------


def test_push_inserts_a_tag_into_untagged_frames_of_several_lengths(pool):
    frames = [make_frame(i, size) for i, size in enumerate([60, 64, 61, 128, 1514, 200])]
    bufs = load(pool, frames)
    refused = VlanOp(ADD, 101, 3).apply(pool.data, pool.lengths, bufs)
    assert len(refused) == 0
    tci = struct.pack("!HH", 0x8100, (3 << 13) | 101)
    assert read(pool, bufs) == [f[:12] + tci + f[12:] for f in frames]


def test_push_rewrites_an_existing_tag_instead_of_stacking(pool):
    frames = [make_frame(1, 80, vlan=tag(7, 1)), make_frame(2, 90), make_frame(3, 1000, vlan=tag(4095, 7))]
    bufs = load(pool, frames)
    push_tag(pool.data, pool.lengths, bufs, (5 << 13) | 42)
    got = read(pool, bufs)
    assert got[0] == make_frame(1, 80, vlan=tag(42, 5))
    assert (
        got[1] == make_frame(2, 90)[:12] + struct.pack("!HH", 0x8100, (5 << 13) | 42) + make_frame(2, 90)[12:]
    )
    assert got[2] == make_frame(3, 1000, vlan=tag(42, 5))


def test_strip_removes_the_outer_tag_and_leaves_untagged_frames_alone(pool):
    inner = make_frame(9, 100, vlan=(0x8100, 20))
    frames = [make_frame(1, 70, vlan=tag(10)), make_frame(2, 64), make_frame(3, 1514, vlan=tag(11, 2))]
    frames.append(inner[:12] + struct.pack("!HH", 0x8100, 30) + inner[12:])  # double tagged
    bufs = load(pool, frames)
    VlanOp(DEL).apply(pool.data, pool.lengths, bufs)
    got = read(pool, bufs)
    untag = make_frame(1, 70, vlan=tag(10))
    assert got[0] == untag[:12] + untag[16:]
    assert got[1] == frames[1]
    assert got[2] == frames[2][:12] + frames[2][16:]
    assert got[3] == inner  # only the outer tag goes


def test_push_then_strip_is_the_identity_and_runts_are_left_alone(pool):
    frames = [make_frame(i, 60 + 37 * i) for i in range(20)] + [b"\x01" * 10]
    bufs = load(pool, frames)
    push_tag(pool.data, pool.lengths, bufs, 100)
    assert pool.read(int(bufs[-1])) == b"\x01" * 10
    strip_tag(pool.data, pool.lengths, bufs)
    assert read(pool, bufs) == frames


def test_push_refuses_a_frame_that_would_not_fit_its_buffer(pool):
    big = bytes(14) + bytes(range(256)) * 7 + bytes(pool.buf_size - 14 - 1792)
    assert len(big) == pool.buf_size
    bufs = load(pool, [make_frame(1, 64), big])
    refused = push_tag(pool.data, pool.lengths, bufs, 5)
    assert refused.tolist() == [int(bufs[1])]
    assert pool.read(int(bufs[1])) == big  # untouched
    assert len(pool.read(int(bufs[0]))) == 68


def test_tags_at_the_edge_of_the_buffer(pool):
    size = pool.buf_size
    frames = [make_frame(1, size - 4), make_frame(2, size, vlan=tag(9)), make_frame(3, 64)]
    bufs = load(pool, frames)
    assert len(push_tag(pool.data, pool.lengths, bufs[:1], 77)) == 0
    assert pool.read(int(bufs[0])) == frames[0][:12] + bytes.fromhex("8100004d") + frames[0][12:]
    strip_tag(pool.data, pool.lengths, bufs[1:])
    assert read(pool, bufs[1:]) == [frames[1][:12] + frames[1][16:], frames[2]]


def test_vlan_status_objects():
    assert VlanOp().status() == {"operation": "none", "id": 0, "pcp": 0}
    assert VlanOp(ADD, 101, 3).status() == {"operation": "add", "id": 101, "pcp": 3}
    assert VlanOp(DEL).status() == {"operation": "del", "id": 0, "pcp": 0}
    with pytest.raises(ValueError):
        VlanOp(ADD, 4096, 0)


# -- classifier ----------------------------------------------------------------------------------


def mac_int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def test_frames_are_classified_from_their_header_words(pool):
    table = ClassifierTable(
        [(0, Entry(UNTAGGED, mac_int(MAC_A))), (1, Entry(101, mac_int(MAC_A))), (2, Entry(UNTAGGED, None))]
    )
    frames = [make_frame(1, 64, dst=MAC_A), make_frame(2, 64, dst=MAC_A, vlan=tag(101, 6))]
    frames.append(make_frame(3, 64, dst=MAC_A, vlan=(0x88A8, 101)))  # not 802.1Q: untagged for SPP
    frames.append(make_frame(4, 64, dst=MAC_B))
    words = FrameWords.of(pool.data)
    bi = load(pool, frames).astype(np.intp)
    dest, clean, vid = table.classify_frames(words, bi)
    assert dest.tolist() == [0, 1, 0, 2] and clean
    assert vid is not None and vid.tolist() == [UNTAGGED, 101, UNTAGGED, UNTAGGED]
    bi = load(pool, [frames[0], frames[3], make_frame(5, 64, dst=BCAST)]).astype(np.intp)
    dest, clean, vid = table.classify_frames(words, bi)
    assert dest.tolist() == [0, 2, FLOOD] and not clean and vid is None  # no tag: no VIDs computed


def classify(table: ClassifierTable, pkts: list[tuple[bytes, int]]) -> list[int]:
    mac = np.array([mac_int(m) for m, _ in pkts], np.uint64)
    vid = np.array([v for _, v in pkts], np.int64)
    return table.classify_macs(mac, vid).tolist()


def test_classifier_decisions_follow_spp():
    mc = bytes.fromhex("01005e000001")
    other = bytes.fromhex("020000000099")
    t = ClassifierTable(
        [
            (0, Entry(UNTAGGED, mac_int(MAC_A))),
            (1, Entry(UNTAGGED, None)),  # general default
            (2, Entry(101, mac_int(MAC_B))),
            (3, Entry(102, mac_int(MAC_A))),
            (4, Entry(102, None)),
        ]
    )
    assert classify(
        t,
        [
            (MAC_A, UNTAGGED),  # unicast hit
            (other, UNTAGGED),  # unknown unicast -> general default
            (MAC_B, 101),  # hit in VID 101
            (MAC_A, 101),  # unknown in 101, no VID default -> general default
            (MAC_A, 102),  # hit in 102
            (other, 102),  # VID default
            (MAC_A, 300),  # VID without a table -> general default
            (BCAST, UNTAGGED),
            (mc, 101),
            (BCAST, 300),  # multicast of a VID without table -> general default only
        ],
    ) == [0, 1, 2, 1, 3, 4, 1, FLOOD, FLOOD, 1]
    assert t.flood_targets(UNTAGGED) == (0, 1)
    assert t.flood_targets(101) == (2, 1)  # tagged floods reach the general default too
    assert t.flood_targets(102) == (3, 4, 1)


def test_without_defaults_unknown_traffic_is_dropped():
    t = ClassifierTable([(0, Entry(UNTAGGED, mac_int(MAC_A))), (1, Entry(5, mac_int(MAC_B)))])
    assert classify(t, [(MAC_B, UNTAGGED), (MAC_A, 5), (MAC_A, 6), (BCAST, 6)]) == [DROP] * 4
    assert classify(t, [(BCAST, UNTAGGED), (BCAST, 5)]) == [FLOOD, FLOOD]
    assert t.flood_targets(5) == (1,)


def test_large_table_matches_a_dict_and_stays_a_shallow_hash():
    rng = random.Random(5)
    entries, ref = [], {}
    while len(entries) < 10_000:
        mac = rng.getrandbits(48) & ~(1 << 40)  # unicast
        vid = rng.choice([UNTAGGED, UNTAGGED, 10, 20, 4000])
        if (vid, mac) in ref:
            continue
        ref[(vid, mac)] = len(entries) % 64
        entries.append((ref[(vid, mac)], Entry(vid, mac)))
    big = ClassifierTable(entries)
    keys = list(ref)
    probe = [rng.choice(keys) for _ in range(200)] + [
        (UNTAGGED, rng.getrandbits(48) & ~(1 << 40)) for _ in range(56)
    ]
    mac = np.array([m for _, m in probe], np.uint64)
    vid = np.array([v for v, _ in probe], np.int64)
    assert big.classify_macs(mac, vid).tolist() == [ref.get(k, DROP) for k in probe]
    assert big.max_probe > 0  # collisions were walked

    # What keeps a lookup's cost independent of the table's size (timings live in bench/): the
    # table stays at most half full, and the vectorised probe walk is a handful of passes.
    assert len(big.hkeys) >= 2 * len(entries)
    assert 0 < big.max_probe <= 16


def test_mac_text_round_trip():
    assert format_mac(parse_mac("fa:16:3e:7d:cc:35")) == "FA:16:3E:7D:CC:35"
    for bad in ("fa:16:3e:7d:cc", "fa-16-3e-7d-cc-35", "gg:16:3e:7d:cc:35"):
        with pytest.raises(ValueError):
            parse_mac(bad)
    assert Entry(UNTAGGED, None).value == "default"
    assert Entry(101, None).value == "101/default"
    assert Entry(101, parse_mac("fa:16:3e:7d:cc:35")).value == "101/FA:16:3E:7D:CC:35"


# -- parser --------------------------------------------------------------------------------------


def p(line: str, table: bool = True):
    return parse(line.split(), VF_KINDS, table)


def test_parser_accepts_spp_commands():
    assert p("status") == Simple("status")
    assert p("component start cls 2 classifier_mac") == ComponentStart("cls", 2, "classifier")
    assert p("component stop mir 9 mirror") == ComponentStop("mir")  # recipes add ignored tokens
    ring0 = PortId("ring", 0)
    assert p("port add ring:0 rx fwd1") == PortCommand("add", ring0, "rx", "fwd1")
    assert p("port add phy:0 tx fwd1 add_vlantag 101 3") == PortCommand(
        "add", PortId("phy", 0), "tx", "fwd1", VlanOp(ADD, 101, 3)
    )
    assert p("port add ring:0 tx f add_vlantag 101").vlan == VlanOp(ADD, 101, 0)  # not SPP's PCP 7
    assert p("port add ring:0 tx f del_vlantag").vlan == VlanOp(DEL)
    assert p("classifier_table add mac FA:16:3E:7D:CC:35 ring:0") == TableCommand(
        "add", Entry(UNTAGGED, 0xFA163E7DCC35), ring0
    )
    assert p("classifier_table del vlan 101 default ring:0") == TableCommand("del", Entry(101, None), ring0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("status now", "Wrong message format"),
        ("port add ring:0 rx a b c d e f", "Wrong message format: 10 tokens"),
        ("frobnicate", "Invalid value (command): unknown command 'frobnicate'"),
        ("flush", "Invalid value (command): 'flush' was removed"),
        ("component begin x 1 forward", "Invalid value (action)"),
        ("component start x 1", "Wrong message format"),
        ("component start x one forward", "Invalid value (core): 'one'"),
        ("component start x 1 router", "Invalid value (component type): 'router'"),
        ("component start " + "n" * 40 + " 1 forward", "Invalid value (component name)"),
        ("port add ring:x rx f", "Invalid value (port): invalid port 'ring:x'"),
        ("port add pcap:0 rx f", "Invalid value (port): pcap:0: this process uses phy, ring and vhost"),
        ("port add ring:0 up f", "Invalid value (port rxtx): 'up'"),
        ("port add ring:0 rx f push_vlantag 1 1", "Invalid value (port vlan operation)"),
        ("port add ring:0 rx f add_vlantag 4096 1", "Invalid value (port vid): '4096'"),
        ("port add ring:0 rx f add_vlantag 10 8", "Invalid value (port pcp): '8'"),
        ("port del ring:0 rx f del_vlantag", "Wrong message format"),
        ("classifier_table add mac 52:54:00:12:34 ring:0", "Invalid value (mac address)"),
        ("classifier_table add ip 52:54:00:12:34:56 ring:0", "Invalid value (type)"),
        ("classifier_table put mac 52:54:00:12:34:56 ring:0", "Invalid value (action)"),
        ("classifier_table add vlan x 52:54:00:12:34:56 ring:0", "Invalid value (vlan id)"),
        ("classifier_table add vlan 10 52:54:00:12:34:56", "Wrong message format"),
    ],
)
def test_parser_errors_keep_spp_prefixes_and_say_why(line, message):
    with pytest.raises(CommandError) as e:
        p(line)
    assert str(e.value).startswith(message), str(e.value)


def pm(line: str):
    return parse(line.split(), {"mirror": "mirror"}, False, "spp_mirror")


def test_mirror_has_no_classifier_table():
    with pytest.raises(CommandError, match=r"^Invalid value \(command\): spp_mirror has no classifier"):
        pm("classifier_table add mac default ring:0")
    with pytest.raises(CommandError, match=r"Invalid value \(component type\)"):
        pm("component start m 1 forward")
    assert pm("component start mir 1 mirror") == ComponentStart("mir", 1, "mirror")
