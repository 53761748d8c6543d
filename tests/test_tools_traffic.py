"""spp-pktgen and spp-l2fwd: frames, accounting, and real runs over pcap, ring and phy ports."""

from __future__ import annotations

import contextlib
import json
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spp.control.ctl.observe import thread_cpu
from spp.engine.pcapfile import GLOBAL_HEADER
from spp.engine.pool import BufferPool
from spp.integrations.testbed import Testbed, wait_for
from spp.tools.frames import (
    FieldError,
    FrameBuilder,
    FrameSpec,
    ipv4_checksum,
    parse_ip_span,
    parse_mac_span,
    parse_port_span,
    parse_size_span,
    read_signatures,
)
from spp.tools.pktgen import Rate, parse_rate
from spp.tools.ports import private_segment_path
from spp.tools.stats import RxStats
from tests.netutil import is_root, veth_pair_in_netns

PKTGEN = [sys.executable, "-m", "spp.tools.pktgen"]
L2FWD = [sys.executable, "-m", "spp.tools.l2fwd"]


def spec(**kw: str | int | None) -> FrameSpec:
    fields = {
        "dst_mac": "02:00:00:00:00:02",
        "src_mac": "02:00:00:00:00:01",
        "dst_ip": "198.18.0.2",
        "src_ip": "198.18.0.1",
        "dst_port": "1024",
        "src_port": "1024",
        "size": "64",
    }
    vlan = kw.pop("vlan", None)
    fields.update({k: str(v) for k, v in kw.items()})
    return FrameSpec(
        dst_mac=parse_mac_span(fields["dst_mac"]),
        src_mac=parse_mac_span(fields["src_mac"]),
        dst_ip=parse_ip_span(fields["dst_ip"]),
        src_ip=parse_ip_span(fields["src_ip"]),
        dst_port=parse_port_span(fields["dst_port"]),
        src_port=parse_port_span(fields["src_port"]),
        size=parse_size_span(fields["size"]),
        vlan=vlan,  # type: ignore[arg-type]
    )


def read_pcap(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    frames, off = [], 24
    while off + 16 <= len(raw):
        incl = struct.unpack_from("<I", raw, off + 8)[0]
        frames.append(raw[off + 16 : off + 16 + incl])
        off += 16 + incl
    return frames


# -- frames and accounting (no processes) ----------------------------------------------------------


def test_frames_carry_every_field_and_a_valid_ip_checksum(pool: BufferPool) -> None:
    b = FrameBuilder(
        spec(
            size="70-73",
            src_ip="10.0.0.1-10.0.0.3",
            dst_mac="02:00:00:00:01:fe-02:00:00:00:02:01",
            dst_port="5000-5001",
            vlan=100,
        )
    )
    bufs = pool.alloc(8)
    seqs = np.arange(10, 18, dtype=np.uint64)
    b.fill(pool.data, pool.lengths, bufs, seqs, 123456789)
    frames = [pool.read(int(x)) for x in bufs]
    for seq, f in zip(range(10, 18), frames, strict=True):
        assert len(f) == 70 + seq % 4
        assert f[0:6] == (0x0200000001FE + seq % 4).to_bytes(6, "big")
        assert f[6:12] == bytes.fromhex("020000000001")
        assert f[12:16] == struct.pack("!HH", 0x8100, 100) and f[16:18] == b"\x08\x00"
        ip = f[18:38]
        assert ipv4_checksum(ip) == 0, "checksum over a header with its checksum must fold to 0"
        assert struct.unpack("!H", ip[2:4])[0] == len(f) - 18
        assert ip[12:16] == bytes([10, 0, 0, 1 + seq % 3])
        sport, dport, ulen, _ = struct.unpack("!HHHH", f[38:46])
        assert (sport, dport, ulen) == (1024, 5000 + seq % 2, len(f) - 38)
        assert f[46:50] == b"SPPG"
        assert struct.unpack("<QQ", f[50:66]) == (seq, 123456789)
    sig = read_signatures(pool.data, pool.lengths, bufs)
    assert sig.seqs.tolist() == list(range(10, 18)) and sig.others == 0
    pool.free(bufs)


def test_bad_fields_are_refused_by_name() -> None:
    with pytest.raises(FieldError, match="too small"):
        FrameBuilder(spec(size="60"))
    with pytest.raises(FieldError, match=r"IPv4 address '10\.0\.0\.300'"):
        parse_ip_span("10.0.0.300")
    with pytest.raises(FieldError, match="range"):
        parse_port_span("10-5")
    with pytest.raises(FieldError, match="rate"):
        parse_rate("fast")
    assert parse_rate("10kpps") == Rate(pps=10000)
    assert parse_rate("1.5M") == Rate(pps=1.5e6)
    assert parse_rate("100Mbps").packets_per_second(125) == pytest.approx(100000)
    assert parse_rate("max") == Rate()


def test_loss_duplicates_and_reordering_are_counted() -> None:
    st = RxStats()
    sent = np.array([1000, 1000, 1000, 1000], np.uint64)
    st.add(np.array([0, 1, 3, 2], np.uint64), sent, 2000, 256, others=1)
    st.add(np.array([5, 5, 4], np.uint64), sent[:3], 3000, 192, others=0)
    assert st.received == 7 and st.unique == 6
    assert st.duplicates == 1
    assert st.reordered == 2  # 2 after 3, 4 after 5
    assert st.lost(None) == 0 and st.lost(8) == 2
    assert st.others == 1
    lat = st.latency()
    assert lat is not None and lat["min_us"] == 1.0 and lat["max_us"] == 2.0


# -- pcap ports: byte-for-byte --------------------------------------------------------------------


def run_until_written(argv: list[str], out: Path, frames: int, timeout: float = 60) -> str:
    """Run an l2fwd until ``out`` holds ``frames`` records; stop it (SIGTERM) and return its stdout."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if out.exists() and len(read_pcap(out)) >= frames:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    return stdout


def test_l2fwd_rewrites_macs_byte_for_byte_between_pcap_ports(tmp_path: Path) -> None:
    d = str(tmp_path)
    gen = subprocess.run(
        [*PKTGEN, "--tx", "pcap:1", "--pcap-dir", d, "--count", "300", "--size", "66-200",
         "--src-mac", "02:00:00:00:00:10-02:00:00:00:00:20", "--vlan", "5", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(gen.stdout)["tx"]["frames"] == 300
    sent = read_pcap(tmp_path / "spp-tx1.pcap")
    assert len(sent) == 300
    (tmp_path / "spp-tx1.pcap").rename(tmp_path / "spp-rx2.pcap")

    # dst and src per port
    out = run_until_written(
        [*L2FWD, "pcap:2", "pcap:3", "--oneway", "--pcap-dir", d, "--json",
         "--eth-dest", "1,0a:0b:0c:0d:0e:0f", "--eth-src", "1,02:11:22:33:44:55"],
        tmp_path / "spp-tx3.pcap", 300,
    )  # fmt: skip
    got = read_pcap(tmp_path / "spp-tx3.pcap")
    assert len(got) == 300
    for a, b in zip(sent, got, strict=True):
        assert b == bytes.fromhex("0a0b0c0d0e0f021122334455") + a[12:]
    counters = json.loads(out.strip().splitlines()[-1])
    assert counters["pcap:2"]["rx"] == 300 and counters["pcap:3"]["tx"] == 300

    # swap
    (tmp_path / "spp-rx4.pcap").write_bytes((tmp_path / "spp-rx2.pcap").read_bytes())
    run_until_written([*L2FWD, "pcap:4", "pcap:5", "--oneway", "--pcap-dir", d, "--swap"],
                      tmp_path / "spp-tx5.pcap", 300)  # fmt: skip
    swapped = read_pcap(tmp_path / "spp-tx5.pcap")
    for a, b in zip(sent, swapped, strict=True):
        assert b == a[6:12] + a[0:6] + a[12:]

    # and the receiver finds every sequence number in what l2fwd wrote
    (tmp_path / "spp-tx5.pcap").rename(tmp_path / "spp-rx6.pcap")
    rx = subprocess.run(
        [*PKTGEN, "--rx", "pcap:6", "--pcap-dir", d, "--count", "300", "--duration", "30", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    r = json.loads(rx.stdout)["rx"]
    assert (r["unique"], r["lost"], r["duplicates"], r["reordered"]) == (300, 0, 0, 0)
    assert r["latency"]["samples"] == 300
    assert not leftover_private_pools()


def test_pktgen_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    r = subprocess.run([*PKTGEN, "--tx", "ring:0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "ring ports live in a running instance" in r.stderr
    r = subprocess.run([*PKTGEN, "--tx", "bogus:1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "unknown type 'bogus'" in r.stderr
    r = subprocess.run(
        [*PKTGEN, "--tx", "ring:0", "--file-prefix", "no-such-prefix-here"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and "no primary with file prefix" in r.stderr
    (tmp_path / "spp-rx1.pcap").write_bytes(GLOBAL_HEADER)
    r = subprocess.run([*L2FWD, "pcap:1", "pcap:1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "both pcap:1" in r.stderr


# -- ring ports through a running instance -------------------------------------------------------


def test_pktgen_through_nfv_and_l2fwd_on_rings(tmp_path: Path) -> None:
    with Testbed(nb_rings=3, log_dir=tmp_path) as bed:
        nfv = bed.launch_nfv(1)
        nfv.add("ring:0")
        nfv.add("ring:1")
        nfv.patch("ring:0", "ring:1")
        nfv.forward()
        fwd = subprocess.Popen(
            [*L2FWD, "ring:1", "ring:2", "--oneway", "--file-prefix", bed.prefix, "--json",
             "--eth-dest", "1,02:00:00:00:00:99"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            gen = subprocess.run(
                [*PKTGEN, "--file-prefix", bed.prefix, "--tx", "ring:0", "--rx", "ring:2",
                 "--count", "3000", "--rate", "3000", "--interval", "0.2", "--drain", "20", "--json"],
                capture_output=True, text=True, timeout=90,
            )  # fmt: skip
            assert gen.returncode == 0, gen.stderr
            fwd.send_signal(signal.SIGUSR1)  # counters while it keeps running
            assert fwd.stdout is not None
            on_usr1 = json.loads(fwd.stdout.readline())
            assert fwd.poll() is None
            fwd.send_signal(signal.SIGTERM)
            fwd_out, _ = fwd.communicate(timeout=30)
        finally:
            if fwd.poll() is None:
                fwd.kill()
                fwd.wait()
        s = json.loads(gen.stdout)
        assert s["tx"]["frames"] == 3000
        rx = s["rx"]
        counters = json.loads(fwd_out.strip().splitlines()[-1])
        # A forwarder descheduled for longer than a ring's worth of frames drops (the machine is
        # shared): every frame is then either received or counted as a drop where it was lost.
        dropped = bed.ring_stats(1)["tx_drop"] + counters["ring:2"]["tx_drop"]
        assert rx["unique"] + dropped == 3000 and rx["lost"] == dropped
        assert (rx["duplicates"], rx["reordered"]) == (0, 0)
        assert rx["unique"] > 0
        lat = rx["latency"]
        assert lat["samples"] == rx["unique"]
        assert 0 < lat["min_us"] <= lat["median_us"] <= lat["p99_us"] <= lat["max_us"]
        # live lines went to stderr, one per interval, while it ran
        assert "ready (tx ring:0, rx ring:2)" in gen.stderr
        assert gen.stderr.count("total tx") >= 1
        assert counters["ring:2"]["tx"] == rx["unique"] == on_usr1["ring:2"]["tx"]
        assert counters["ring:1"]["rx"] == 3000 - bed.ring_stats(1)["tx_drop"]
        # the tools' ring counters are in the instance's process rows, so the primary shows them
        assert bed.ring_stats(0)["tx"] >= 3000
        assert bed.ring_stats(2)["rx"] >= rx["received"]


# -- phy ports, standalone tools in namespaces ---------------------------------------------------


@pytest.mark.skipif(not is_root(), reason="needs root for network namespaces and veth")
def test_pktgen_over_phy_through_nfv(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(veth_pair_in_netns())
        b = stack.enter_context(veth_pair_in_netns())
        bed = stack.enter_context(Testbed(ifaces=[a.host_if, b.host_if], log_dir=tmp_path))
        nfv = bed.launch_nfv(1)
        nfv.patch("phy:0", "phy:1")
        nfv.forward()
        rx = subprocess.Popen(
            ["ip", "netns", "exec", b.ns, *PKTGEN, "--iface", b.ns_if, "--rx", "phy:0",
             "--count", "2000", "--duration", "60", "--json", "--interval", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert rx.stderr is not None
            line = rx.stderr.readline()
            assert "ready" in line, line + rx.stderr.read()
            tx = subprocess.run(
                ["ip", "netns", "exec", a.ns, *PKTGEN, "--iface", a.ns_if, "--tx", "phy:0",
                 "--count", "2000", "--rate", "10000", "--size", "64-1000", "--json"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert tx.returncode == 0, tx.stderr
            out, err = rx.communicate(timeout=90)
        finally:
            if rx.poll() is None:
                rx.kill()
                rx.wait()
        assert rx.returncode == 0, err
        assert json.loads(tx.stdout)["tx"]["frames"] == 2000
        r = json.loads(out)["rx"]
        assert (r["unique"], r["lost"], r["duplicates"], r["reordered"]) == (2000, 0, 0, 0)
        assert r["latency"]["samples"] == 2000
    assert not leftover_private_pools()


def leftover_private_pools() -> list[Path]:
    """Private pools of standalone tools whose process is gone (each removes its own on exit)."""
    left = []
    for p in Path("/dev/shm").glob("spp_*-*.seg"):
        kind, _, pid = p.stem.removeprefix("spp_").rpartition("-")
        if kind in ("pktgen", "l2fwd") and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            left.append(p)
    return left


def test_pktgen_plots_the_rates_of_its_run(tmp_path: Path) -> None:
    d = str(tmp_path)
    for name in ("run.svg", "run.png"):
        r = subprocess.run(
            [*PKTGEN, "--tx", "pcap:1", "--pcap-dir", d, "--rate", "20k", "--duration", "1.6",
             "--interval", "0.4", "--plot", str(tmp_path / name)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert f"rates plotted to '{tmp_path / name}'" in r.stderr
    svg = (tmp_path / "run.svg").read_text()
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg)
    (line,) = root.iter("{http://www.w3.org/2000/svg}polyline")
    points = [tuple(map(float, p.split(","))) for p in (line.get("points") or "").split()]
    assert len(points) >= 3  # one per interval
    assert "tx pps" in svg and "spp-pktgen - tx pcap:1" in svg
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = subprocess.run([*PKTGEN, "--tx", "pcap:1", "--pcap-dir", d, "--count", "10", "--plot", "x.txt"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1 and "must end in .svg or .png" in r.stderr
    r = subprocess.run([*PKTGEN, "--tx", "pcap:1", "--pcap-dir", d, "--count", "10", "--interval", "0",
                        "--plot", "x.svg"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1 and "--plot needs --interval > 0" in r.stderr


def test_a_killed_standalone_pktgen_leaves_no_pool_behind(tmp_path: Path) -> None:
    """SIGKILL gives a tool no chance to clean up: its private pool must not be a file by then.
    The pool is unlinked once mapped (the process still maps it, as ``(deleted)``), and a pool
    left under the name of a dead pid is removed by the next standalone tool."""
    stale = Path(private_segment_path("pktgen", 2**22 + 1))  # above pid_max's default: never alive
    stale.write_bytes(b"left by a killed pktgen")
    proc = subprocess.Popen(
        [*PKTGEN, "--tx", "nullpmd:0", "--duration", "120", "--rate", "1000", "--interval", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    path = private_segment_path("pktgen", proc.pid)
    try:

        def mapped() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            return f"{path} (deleted)" in maps

        wait_for(mapped, 30, "pktgen to map its pool")
        assert not Path(path).exists()
        assert not stale.exists()
    finally:
        stale.unlink(missing_ok=True)
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not Path(path).exists()
    assert not leftover_private_pools()


def test_l2fwd_busy_polls_after_a_packet_when_asked_then_sleeps(tmp_path: Path) -> None:
    """``--busy-poll-us`` (as spp-nfv's): after a packet the forwarding thread keeps polling
    for that long, using a core, then sleeps and uses none."""
    with Testbed(nb_rings=2, log_dir=tmp_path) as bed:
        argv = [*L2FWD, "ring:0", "ring:1", "--oneway", "--file-prefix", bed.prefix]
        fwd = bed._spawn("spp-l2fwd", [*argv, "--busy-poll-us", "1000000"])  # (stopped with the bed)
        wait_for(lambda: "forwarding ring:0 -> ring:1" in bed.log("spp-l2fwd"), 30, "spp-l2fwd to start")

        def cpu() -> float:  # the forwarding thread's
            return thread_cpu(fwd.pid)["l2fwd"]

        time.sleep(1.5)  # whatever it did starting up is over: asleep
        idle = cpu()
        gen = subprocess.run(
            [*PKTGEN, "--file-prefix", bed.prefix, "--tx", "ring:0", "--count", "1", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert gen.returncode == 0, gen.stderr
        wait_for(lambda: bed.ring_stats(1)["tx"] >= 1, 10, "the packet through l2fwd")
        spent = cpu() - idle
        time.sleep(0.8)
        polled = cpu() - idle - spent
        assert polled >= 0.15, f"{polled:.2f} s of CPU in 0.8 s: not polling"
        time.sleep(1.5)
        before = cpu()
        time.sleep(1.0)
        assert cpu() - before <= 0.05, "still polling long after the packet"
