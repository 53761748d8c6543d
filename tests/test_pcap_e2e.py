"""spp_pcap end to end: real spp-ctl, primary, nfv and spp_pcap processes. A known pcap is replayed
by an nfv (``pcap:N`` -> ``ring:R``) while spp_pcap captures ``ring:R``; the files it writes are
judged by outside readers (the lz4 CLI, tcpdump, tshark) as well as python-lz4."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from spp.integrations.testbed import PcapClient, Testbed, launch_pcap, start_pcap, wait_for
from tests.netutil import TEST_SRC, is_root, make_frame, veth_pair_in_netns
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
from tests.test_e2e_cli import spp
from tests.test_engine_ports import mixed_frames, write_pcap

LZ4_FRAME_MAGIC = bytes.fromhex("04224d18")
_feeds = itertools.count()


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> Iterator[Testbed]:
    with Testbed(nb_rings=8, log_dir=tmp_path_factory.mktemp("logs")) as b:
        b.launch_nfv(1)
        yield b


def wire(frames: list[bytes]) -> list[bytes]:
    """``frames`` less the runts, which every receive path (the pcap port's too) drops and counts
    (tests/test_engine_ports.py); the capture filter's handling of runts is tested on its own."""
    return [f for f in frames if len(f) >= 14]


def feed(bed: Testbed, ring: int, frames: list[bytes]) -> tuple[int, int]:
    """Replay ``frames`` into ``ring:R`` through nfv 1 (a ``pcap:N`` port); returns the time span
    (ns) in which they were received, i.e. stamped."""
    n = 300 + (os.getpid() * 7 + next(_feeds)) % 400
    rx, tx = Path(f"/tmp/spp-rx{n}.pcap"), Path(f"/tmp/spp-tx{n}.pcap")
    nfv = bed.nfv(1)
    before = bed.ring_stats(ring)["tx"]
    write_pcap(rx, frames)
    try:
        nfv.add(f"pcap:{n}")
        nfv.add(f"ring:{ring}")
        nfv.patch(f"pcap:{n}", f"ring:{ring}")
        t0 = time.time_ns()
        nfv.forward()
        wait_for(lambda: bed.ring_stats(ring)["tx"] == before + len(frames), 20, f"frames into ring:{ring}")
        t1 = time.time_ns()
        nfv.stop()
        nfv.delete(f"pcap:{n}")
        nfv.delete(f"ring:{ring}")
    finally:
        rx.unlink(missing_ok=True)
        tx.unlink(missing_ok=True)
    return t0, t1


def received(pcap: PcapClient) -> int:
    return pcap.status()["core"][0]["received"]


def files(out_dir: Path) -> list[Path]:
    return sorted(out_dir.iterdir())


def test_capture_of_a_known_pcap_is_byte_identical_for_every_reader(bed, tmp_path):
    frames = mixed_frames(600, seed=31) + wire(make_traffic(400, seed=32))
    count = len(frames)
    pcap = launch_pcap(bed, 2, "ring:0", tmp_path)
    try:
        pcap.start()
        name = pcap.status()["core"][1]["filename"]
        assert Path(name).parent == tmp_path and name.endswith(".ring0.1.1.pcap.lz4")
        assert [p.name for p in files(tmp_path)] == [Path(name).name + ".tmp"]  # .tmp while open
        t0, t1 = feed(bed, 0, frames)
        wait_for(lambda: received(pcap) == count, 10, f"spp_pcap to receive {count} frames")
        pcap.stop()
        st = pcap.status()
        assert st["status"] == "idle" and st["core"][1]["filename"] == ""
        assert st["core"][0]["dropped"] == 0 and st["core"][1]["written"] == count
    finally:
        pcap.exit()
    (path,) = files(tmp_path)
    assert str(path) == name  # renamed, not rewritten
    raw = path.read_bytes()
    # An LZ4 frame as SPP writes it: linked 256 KiB blocks, no content size or checksum.
    assert raw[:6] == LZ4_FRAME_MAGIC + bytes([0x40, 0x50])
    plain = lz4_cli_decompress(path, tmp_path / "out.pcap")
    assert plain == lz4_py_decompress(path)
    records = classic_frames(plain)
    assert [f for _, f in records] == frames
    # Stamped when received (by nfv 1's pcap port), not when written.
    stamps = [us for us, _ in records]
    assert stamps == sorted(stamps)
    assert t0 // 1000 <= stamps[0] and stamps[-1] <= t1 // 1000
    assert tcpdump_count(tmp_path / "out.pcap") == count
    assert tcpdump_hex(tmp_path / "out.pcap") == frames
    seen = tshark_frames(tmp_path / "out.pcap")
    if seen is not None:
        assert [f for _, f in seen] == frames


def test_rotation_gives_complete_files_per_writer_and_tmp_only_while_open(bed, tmp_path):
    frames = mixed_frames(1500, seed=33)
    fsize = 24 * 1024
    pcap = launch_pcap(bed, 3, "ring:1", tmp_path, lcores="0-3", fsize=fsize)  # writers on 2 and 3
    try:
        st = pcap.status()
        assert [(c["core"], c["role"]) for c in st["core"]] == [(1, "receive"), (2, "write"), (3, "write")]
        pcap.start()
        open_names = {Path(c["filename"]).name + ".tmp" for c in pcap.status()["core"][1:]}
        assert {p.name for p in files(tmp_path)} == open_names
        feed(bed, 1, frames)
        wait_for(lambda: received(pcap) == 1500, 10, "spp_pcap to receive 1500 frames")
        pcap.stop()
    finally:
        pcap.exit()
    names = [p.name for p in files(tmp_path)]
    assert not [n for n in names if n.endswith(".tmp")]
    by_writer: dict[int, list[bytes]] = {1: [], 2: []}
    for writer in (1, 2):
        seqs = sorted(int(n.split(".")[4]) for n in names if n.split(".")[3] == str(writer))
        assert seqs == list(range(1, len(seqs) + 1))
        for seq in seqs:
            path = next(tmp_path.glob(f"spp_pcap.*.ring1.{writer}.{seq}.pcap.lz4"))
            plain = lz4_cli_decompress(path, tmp_path / "check.pcap")
            assert len(plain) <= fsize
            got = [f for _, f in classic_frames(plain)]
            assert tcpdump_count(tmp_path / "check.pcap") == len(got)  # each file stands alone
            by_writer[writer] += got
    (tmp_path / "check.pcap").unlink()
    total = sum(len(v) for v in by_writer.values())
    assert total == 1500 and len(names) >= 1500 * 100 // fsize
    assert Counter(by_writer[1] + by_writer[2]) == Counter(frames)
    for got in by_writer.values():  # each writer keeps the order it received in
        order = {f: i for i, f in enumerate(frames)}
        assert [order[f] for f in got] == sorted(order[f] for f in got)


def test_pcapng_with_a_filter_is_read_by_tcpdump_and_tshark(bed, tmp_path):
    frames = wire(make_traffic(800, seed=34))
    oracle_in = tmp_path / "in.pcap"
    write_pcap(oracle_in, frames)
    expr = "tcp port 80 or arp or ip6 and udp"  # equal precedence: ((.. or ..) or ip6) and udp
    wanted = tcpdump_selects(oracle_in, expr)
    assert 50 < len(wanted) < 700
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    pcap = start_pcap(bed, 4, "ring:2", out_dir, extra=["--format", "pcapng", "--filter", expr])
    try:
        assert pcap.status()["filter"] == expr
        pcap.start()
        feed(bed, 2, frames)
        wait_for(lambda: received(pcap) == len(frames), 10, "spp_pcap to receive every frame")
        pcap.stop()
        st = pcap.status()["core"][1]
        assert (st["written"], st["filtered"]) == (len(wanted), len(frames) - len(wanted))
    finally:
        pcap.exit()
    (path,) = files(out_dir)
    assert path.name.endswith(".ring2.1.1.pcapng.lz4")
    plain_path = tmp_path / "out.pcapng"
    plain = lz4_cli_decompress(path, plain_path)
    assert plain[:4] == bytes.fromhex("0a0d0d0a")  # a Section Header Block
    expected = [frames[i] for i in wanted]
    assert tcpdump_count(plain_path) == len(expected)
    assert tcpdump_hex(plain_path) == expected
    seen = tshark_frames(plain_path)
    if seen is not None:
        assert [f for _, f in seen] == expected
        assert all(len(stamp.split(".")[1]) == 9 for stamp, _ in seen)  # nanosecond resolution


class FakeCtl:
    """spp-ctl's end of the wire for one secondary: accept it, send commands, read the replies."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.listener.settimeout(20)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(30)

    def ask(self, command: str) -> bytes:
        assert self.conn is not None
        self.conn.sendall(command.encode())
        raw = b""
        while True:
            chunk = self.conn.recv(65536)
            assert chunk, f"connection closed after {command!r}"
            raw += chunk
            try:
                json.loads(raw)
                return raw
            except ValueError:
                continue

    def ask_json(self, command: str) -> dict:
        return json.loads(self.ask(command))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def error_message(reply: dict) -> str:
    assert reply["results"][0]["result"] == "error", reply
    return reply["results"][0]["error_details"]["message"]


def test_wire_protocol_and_the_run_time_filter(bed, tmp_path):
    """Talk to spp_pcap as spp-ctl does (unpadded, spaced JSON), including our ``filter``."""
    ctl = FakeCtl()
    argv = [sys.executable, "-m", "spp.processes.pcap", "-l", "0,1", "--file-prefix", bed.prefix, "--"]
    argv += ["--client-id", "5", "-s", f"127.0.0.1:{ctl.port}", "-c", "ring:3", "--out-dir", str(tmp_path)]
    proc = bed._spawn("spp_pcap-5", argv)
    try:
        ctl.accept()
        raw = ctl.ask("_get_client_id")
        assert raw == b'{ "results": [ { "result": "success" } ], "client_id": 5, "process_type": "pcap" }'
        info = ctl.ask_json("status")["info"]
        assert list(info) == ["client-id", "status", "master-lcore", "core", "filter"]
        assert error_message(ctl.ask_json("bogus")).startswith("Invalid value (command)")
        assert error_message(ctl.ask_json("start now")).startswith("Wrong message format")
        assert error_message(ctl.ask_json("status all")).startswith("Wrong message format")
        assert error_message(ctl.ask_json("filter ip src")).startswith("Invalid value (filter): ")
        assert ctl.ask("filter  udp   or  arp") == b'{ "results": [ { "result": "success" } ] }'
        assert ctl.ask_json("status")["info"]["filter"] == "udp or arp"
        assert ctl.ask_json("start") == {"results": [{"result": "success"}]}
        assert ctl.ask_json("start") == {"results": [{"result": "success"}]}  # idempotent, as SPP
        frames = wire(make_traffic(400, seed=35))
        feed(bed, 3, frames)

        def handled() -> bool:
            w = ctl.ask_json("status")["info"]["core"][1]
            return w["written"] + w["filtered"] == len(frames)

        wait_for(handled, 10, "the writer to handle every frame")
        assert ctl.ask_json("filter") == {"results": [{"result": "success"}]}  # cleared
        assert ctl.ask_json("status")["info"]["filter"] == ""
        assert ctl.ask_json("exit") == {"results": [{"result": "success"}]}
        proc.wait(10)
    finally:
        ctl.close()
    (path,) = files(tmp_path)  # exit stopped the capture: the file is closed and renamed
    oracle_in = tmp_path / "in.pcap"
    write_pcap(oracle_in, frames)
    wanted = [frames[i] for i in tcpdump_selects(oracle_in, "udp or arp")]
    assert 0 < len(wanted) < 400
    assert [f for _, f in classic_frames(lz4_py_decompress(path))] == wanted


def test_status_over_rest_and_the_cli(bed, tmp_path):
    pcap = launch_pcap(bed, 6, "ring:4", tmp_path)
    try:
        st = pcap.status()
        assert list(st) == ["client-id", "status", "master-lcore", "core", "filter"]
        assert (st["client-id"], st["status"], st["master-lcore"]) == (6, "idle", 0)
        recv, write = st["core"]
        assert list(recv)[:3] == ["core", "role", "rx_port"] and list(write)[:3] == [
            "core",
            "role",
            "filename",
        ]
        assert recv["rx_port"] == [{"port": "ring:4"}] and write["filename"] == ""
        r = spp(bed, "pcap 6; status")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [
            "Basic Information:",
            "  - client-id: 6",
            "  - status: idle",
            "  - lcore_ids:",
            "    - master: 0",
            "    - slaves: [1, 1]",
            "Components:",
            "  - core:1 receive",
            "    - rx: ring:4",
            "  - core:1 write",
            "    - filename: ",
        ]
        r = spp(bed, "pcap 6; start", "pcap 6; status")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "Start packet capture." and "  - status: running" in lines
        filename = pcap.status()["core"][1]["filename"]
        assert f"    - filename: {filename}" in lines
        r = bed.request("PUT", "/v1/pcaps/6/capture", {"action": "pause"})
        assert r.status_code == 400 and "pause" in r.text
        r = spp(bed, "pcap 6; stop", "pcap 6; exit")
        assert r.stdout.splitlines() == ["Stop packet capture.", "Exit pcap 6."]
    finally:
        if {"type": "pcap", "client-id": 6} in bed.processes():
            pcap.exit()
    assert [p.name for p in files(tmp_path)] == [Path(filename).name]


def run_pcap(
    *app: str, lcores: str = "0,1", prefix: str = "nosuchprefix"
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "spp.processes.pcap", "-l", lcores, "--file-prefix", prefix, "--", *app]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "app,lcores,needs_bed,message",
    [
        (
            ["-c", "ring:0", "--out-dir", "/nonexistent/dir"],
            "0,1",
            False,
            "--out-dir /nonexistent/dir: no such",
        ),
        (["-c", "nullpmd:0"], "0,1", False, "captures phy:N or ring:N ports, not nullpmd"),
        (["-c", "pcap:1"], "0,1", False, "captures phy:N or ring:N ports, not pcap"),
        (["-c", "ring:x"], "0,1", False, "invalid port 'ring:x'"),
        (["-c", "ring:0", "--fsize", "0"], "0,1", False, "--fsize 0: must be a positive"),
        (["-c", "ring:0", "--filter", "tcp port"], "0,1", False, "--filter: expression ends too early"),
        (["-c", "ring:0"], "0,1", False, "no primary with file prefix"),
        (["-c", "ring:0"], "0", True, "needs at least two lcores"),
        (["-c", "ring:99"], "0,1", True, "ring:99 does not exist"),
        (["-c", "phy:0"], "0,1", True, "phy:0 does not exist"),
    ],
)
def test_bad_options_are_refused_clearly(bed, tmp_path, app, lcores, needs_bed, message):
    args = ["--client-id", "9", "-s", f"127.0.0.1:{bed.sec_port}"]
    if "--out-dir" not in app:
        args += ["--out-dir", str(tmp_path)]
    r = run_pcap(*args, *app, lcores=lcores, prefix=bed.prefix if needs_bed else "nosuchprefix")
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("spp-pcap: error: ") and message in r.stderr, r.stderr
    assert {"type": "pcap", "client-id": 9} not in bed.processes()
    assert list(tmp_path.iterdir()) == []


def test_launch_with_a_bad_port_reports_why(bed, tmp_path):
    r = bed.request(
        "PUT",
        "/v1/primary/launch",
        {
            "proc_name": "spp_pcap",
            "client_id": 8,
            "eal": {"-l": "0,1", "--proc-type": "secondary"},
            "app": {
                "--client-id": "8",
                "-s": f"127.0.0.1:{bed.sec_port}",
                "-c": "vhost:0",
                "--out-dir": str(tmp_path),
            },
        },
    )
    assert r.status_code == 400 and "phy:N or ring:N" in r.text, r.text


@pytest.mark.skipif(not is_root(), reason="needs root for network namespaces and veth")
def test_capture_from_a_phy_port_fed_by_a_veth(tmp_path):
    """Frames sent into a veth from a namespace, captured on phy:0 with kernel receive stamps."""
    frames = [make_frame(i, size) for i, size in enumerate([60, 64, 128, 1514, 61, 300] * 50)]
    with (
        veth_pair_in_netns() as v,
        Testbed(ifaces=[v.host_if], nb_rings=1, log_dir=tmp_path / "logs") as bed,
    ):
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        src = ":".join(f"{b:02x}" for b in TEST_SRC)
        pcap = start_pcap(bed, 1, "phy:0", out_dir, extra=["--filter", f"ether src {src}"])
        pcap.start()  # returns once the receiver has adopted its step, socket open
        t0 = time.time_ns()
        v.send(frames)
        wait_for(lambda: pcap.status()["core"][1]["written"] >= len(frames), 10, "phy frames captured")
        t1 = time.time_ns()
        pcap.stop()
        assert bed.phy_stats(0)["rx"] >= len(frames)
        pcap.exit()
    (path,) = files(out_dir)
    assert path.name.endswith(".phy0.1.1.pcap.lz4")
    records = classic_frames(lz4_py_decompress(path))
    assert [f for _, f in records] == frames
    stamps = [us for us, _ in records]
    assert stamps == sorted(stamps) and t0 // 1000 <= stamps[0] and stamps[-1] <= t1 // 1000
