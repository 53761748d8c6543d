"""vhost:N against dpdk-testpmd's net_virtio_user, through real spp-ctl, primary and nfv processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spp.integrations.testbed import Testbed, wait_for
from tests.test_engine_ports import mixed_frames, read_pcap, write_pcap
from tests.testpmd import Testpmd, needs_testpmd

pytestmark = needs_testpmd


@pytest.fixture
def bed(tmp_path):
    with Testbed(nb_rings=2, log_dir=tmp_path / "logs") as b:
        yield b


@pytest.fixture
def sock_dir(tmp_path) -> Path:
    d = tmp_path / "sockets"
    d.mkdir()
    return d


def port_stat(nfv, port: str) -> dict[str, int]:
    return nfv.port_stats()[port]


def test_testpmd_io_loop_through_vhost_is_byte_identical(bed, sock_dir, tmp_path):
    """pcap:rx -> vhost:0 -> testpmd (io: echoes) -> vhost:0 -> pcap:tx, frames of 60..1514 bytes."""
    n_in, n_out = 700 + os.getpid() % 50, 750 + os.getpid() % 50
    rx_file, tx_file = f"/tmp/spp-rx{n_in}.pcap", f"/tmp/spp-tx{n_out}.pcap"
    made = [rx_file, tx_file, f"/tmp/spp-tx{n_in}.pcap", f"/tmp/spp-rx{n_out}.pcap"]
    # 200: fewer than either ring holds, so neither side can find a ring full, however late the
    # other runs on a loaded machine
    frames = mixed_frames(200, seed=5)
    write_pcap(rx_file, frames)
    try:
        nfv = bed.start_nfv(1, extra=["--vhost-dir", str(sock_dir)])
        nfv.add("vhost:0")
        assert (sock_dir / "sock0").is_socket()
        with Testpmd(f"net_virtio_user0,path={sock_dir}/sock0", "io", tmp_path / "testpmd.log") as tp:
            tp.wait_output("testpmd>")
            tp.command("start")
            tp.wait_output("packet forwarding - ports")
            nfv.add(f"pcap:{n_out}")
            nfv.patch("vhost:0", f"pcap:{n_out}")
            nfv.add(f"pcap:{n_in}")
            nfv.patch(f"pcap:{n_in}", "vhost:0")
            nfv.forward()
            # testpmd may take a moment to poll; frames offered before its queue runs are refused
            wait_for(
                lambda: (
                    port_stat(nfv, "vhost:0")["rx"] + port_stat(nfv, "vhost:0")["tx_drop"] >= 200
                    and port_stat(nfv, "vhost:0")["rx"] == port_stat(nfv, "vhost:0")["tx"]
                ),
                20,
                "the frames back from testpmd",
            )
            stats = tp.stop_stats()
        nfv.stop()
        nfv.delete(f"pcap:{n_out}")
        vh = port_stat(nfv, "vhost:0")
        assert vh["tx"] == 200 and vh["tx_drop"] == 0
        assert vh["rx"] == vh["tx"] == stats["rx"] == stats["tx"]
        got = read_pcap(Path(tx_file))
        assert got == frames
    finally:
        for f in made:
            if os.path.exists(f):
                os.unlink(f)


def run_testpmd(tp: Testpmd, until) -> dict[str, int]:
    tp.wait_output("testpmd>")
    tp.command("start")
    tp.wait_output("packet forwarding - ports")
    wait_for(until, 30, "traffic through vhost:0")
    return tp.stop_stats()


def test_testpmd_txonly_and_rxonly_counted_through_nfv(bed, sock_dir, tmp_path):
    """testpmd txonly -> vhost:0 -> nullpmd:1 (sink), then nullpmd:0 (source) -> vhost:0 -> testpmd
    rxonly: what one side counts, the other counts too (less what sat in the ring at the stop)."""
    nfv = bed.start_nfv(1, extra=["--vhost-dir", str(sock_dir)])
    for port in ("vhost:0", "nullpmd:0", "nullpmd:1"):
        nfv.add(port)
    nfv.patch("vhost:0", "nullpmd:1")
    nfv.forward()
    with Testpmd(f"net_virtio_user0,path={sock_dir}/sock0", "txonly", tmp_path / "tx.log") as tp:
        stats = run_testpmd(tp, lambda: port_stat(nfv, "vhost:0")["rx"] > 50_000)
        wait_for(lambda: port_stat(nfv, "vhost:0")["rx"] >= stats["tx"] - 256, 10, "the ring drained")
    rx = port_stat(nfv, "vhost:0")["rx"]
    assert stats["tx"] - 256 <= rx <= stats["tx"]
    assert port_stat(nfv, "nullpmd:1")["tx"] == rx
    assert port_stat(nfv, "vhost:0")["errors"] == 0

    nfv.patch("nullpmd:0", "vhost:0")
    with Testpmd(f"net_virtio_user0,path={sock_dir}/sock0", "rxonly", tmp_path / "rx.log") as tp:
        base = port_stat(nfv, "vhost:0")["tx"]
        stats = run_testpmd(tp, lambda: port_stat(nfv, "vhost:0")["tx"] - base > 50_000)
    delivered = port_stat(nfv, "vhost:0")["tx"] - base
    assert delivered - 1024 <= stats["rx"] <= delivered  # at most a ring's worth unread
    assert stats["rx_drop"] == 0
    # testpmd gone: the port stays, refuses and counts what it cannot deliver
    drops = port_stat(nfv, "vhost:0")["tx_drop"]
    wait_for(lambda: port_stat(nfv, "vhost:0")["tx_drop"] > drops + 1000, 10, "drops counted while away")
    st = port_stat(nfv, "vhost:0")
    assert st["connected"] is False and st["tx"] - base == delivered


def test_peer_goes_away_and_comes_back(bed, sock_dir, tmp_path):
    nfv = bed.start_nfv(1, extra=["--vhost-dir", str(sock_dir)])
    for port in ("vhost:0", "nullpmd:1"):
        nfv.add(port)
    nfv.patch("vhost:0", "nullpmd:1")
    nfv.forward()
    total = 0
    for i in range(3):
        with Testpmd(f"net_virtio_user0,path={sock_dir}/sock0", "txonly", tmp_path / f"tx{i}.log") as tp:
            stats = run_testpmd(tp, lambda t=total: port_stat(nfv, "vhost:0")["rx"] > t + 10_000)
        total += stats["tx"]
        wait_for(lambda: not port_stat(nfv, "vhost:0")["connected"], 10, "the disconnect")
        assert total - 256 * (i + 1) <= port_stat(nfv, "vhost:0")["rx"] <= total
    assert port_stat(nfv, "vhost:0")["errors"] == 0


def test_client_mode_port_added_before_the_socket_exists(bed, sock_dir, tmp_path):
    """networking-spp adds ports before the VM starts: with --vhost-client the port waits for the
    front-end's socket (testpmd's virtio-user in server mode here) and connects when it appears."""
    nfv = bed.start_nfv(1, extra=["--vhost-dir", str(sock_dir), "--vhost-client"])
    for port in ("vhost:0", "nullpmd:1"):
        nfv.add(port)
    nfv.patch("vhost:0", "nullpmd:1")
    nfv.forward()
    assert not (sock_dir / "sock0").exists() and port_stat(nfv, "vhost:0")["mode"] == "client"
    for i in range(2):  # and it reconnects when the front-end comes back
        vdev = f"net_virtio_user0,path={sock_dir}/sock0,server=1"
        base = port_stat(nfv, "vhost:0")["rx"]
        with Testpmd(vdev, "txonly", tmp_path / f"srv{i}.log") as tp:
            stats = run_testpmd(tp, lambda b=base: port_stat(nfv, "vhost:0")["rx"] > b + 10_000)
        assert stats["tx"] > 10_000  # all that arrived since came from this testpmd
    assert port_stat(nfv, "vhost:0")["errors"] == 0
