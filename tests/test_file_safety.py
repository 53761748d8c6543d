"""Files written and read by the processes, under attack: links planted at SPP's fixed /tmp names,
files of other users, a capture file truncated while it is replayed, an out-dir swapped for a link.

Real processes (spp-ctl, primary, nfv, spp_pcap) and real files; the pcap names in /tmp use
numbers unique to the test run and are removed afterwards.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from spp.engine.pcapfile import GLOBAL_HEADER
from spp.engine.portid import PortId
from spp.engine.ports import PortError, open_port
from spp.integrations.testbed import Testbed, start_pcap, wait_for
from tests.test_engine_ports import read_pcap, write_pcap

NOBODY = 65534
_numbers = itertools.count()


def pcap_number() -> int:
    return 700 + (os.getpid() * 13 + next(_numbers)) % 200


@pytest.fixture
def tmp_names() -> Iterator[list[Path]]:
    """Paths in /tmp the test plants things at; removed afterwards whatever they have become."""
    made: list[Path] = []
    yield made
    for path in made:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> Iterator[Testbed]:
    with Testbed(nb_rings=4, log_dir=tmp_path_factory.mktemp("logs")) as b:
        b.launch_nfv(1)
        yield b


def nfv_alive(bed: Testbed) -> bool:
    return {"type": "nfv", "client-id": 1} in bed.processes()


def add_port(bed: Testbed, port: str):
    return bed.request("PUT", "/v1/nfvs/1/ports", {"action": "add", "port": port})


# -- pcap:N in a real nfv ---------------------------------------------------------------------------


def test_nfv_refuses_a_link_planted_at_the_tx_file(bed, tmp_path, tmp_names):
    n = pcap_number()
    rx, tx = Path(f"/tmp/spp-rx{n}.pcap"), Path(f"/tmp/spp-tx{n}.pcap")
    tmp_names += [rx, tx]
    victim = tmp_path / "precious"
    victim.write_bytes(b"not yours to overwrite")
    tx.symlink_to(victim)
    res = add_port(bed, f"pcap:{n}")
    assert res.status_code == 400
    assert str(tx) in res.text and "symbolic link" in res.text
    assert victim.read_bytes() == b"not yours to overwrite"
    assert tx.is_symlink()
    assert f"pcap:{n}" not in bed.nfv(1).status()["ports"]
    assert bed.processes()[1:] == [{"type": "nfv", "client-id": 1}]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a file of another user")
def test_nfv_refuses_to_replace_another_users_file(bed, tmp_names):
    n = pcap_number()
    tx = Path(f"/tmp/spp-tx{n}.pcap")
    tmp_names += [Path(f"/tmp/spp-rx{n}.pcap"), tx]
    tx.write_bytes(b"someone else's")
    os.chown(tx, NOBODY, NOBODY)
    res = add_port(bed, f"pcap:{n}")
    assert res.status_code == 400 and "belongs to uid 65534" in res.text
    assert tx.read_bytes() == b"someone else's"


def test_own_files_are_replaced_and_private(bed, tmp_names):
    n = pcap_number()
    rx, tx = Path(f"/tmp/spp-rx{n}.pcap"), Path(f"/tmp/spp-tx{n}.pcap")
    tmp_names += [rx, tx]
    tx.write_bytes(b"last run's capture")
    assert add_port(bed, f"pcap:{n}").status_code == 204
    try:
        assert tx.read_bytes() == GLOBAL_HEADER
        assert rx.read_bytes() == GLOBAL_HEADER  # created, as DPDK's pcap PMD does
        for path in (rx, tx):
            st = os.lstat(path)
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, path
    finally:
        bed.request("PUT", "/v1/nfvs/1/ports", {"action": "del", "port": f"pcap:{n}"})


def test_rx_file_truncated_while_replayed_is_an_error_not_a_crash(bed, tmp_names):
    n = pcap_number()
    rx, tx = Path(f"/tmp/spp-rx{n}.pcap"), Path(f"/tmp/spp-tx{n}.pcap")
    tmp_names += [rx, tx]
    write_pcap(rx, [bytes([i % 256]) * 1000 for i in range(20000)])  # ~20 MB
    nfv = bed.nfv(1)
    nfv.add(f"pcap:{n}")
    try:
        nfv.add("ring:0")
        nfv.patch(f"pcap:{n}", "ring:0")
        os.truncate(rx, 100)  # the port has the file open; now most of it is gone
        nfv.forward()
        nfv_log = bed.log_dir / "spp_nfv-1.log"

        def noticed() -> bool:
            return "shrank" in nfv_log.read_text(errors="replace") or not nfv_alive(bed)

        wait_for(noticed, 15, "the reader to notice")
        assert nfv_alive(bed), "the nfv died (SIGBUS?)"
        assert {"type": "nfv", "client-id": 1} in bed.processes()
        assert bed.nfv(1).status()["status"] == "running"
    finally:
        nfv.stop()
        nfv.reset()
        bed.request("PUT", "/v1/nfvs/1/ports", {"action": "del", "port": f"pcap:{n}"})
        bed.request("PUT", "/v1/nfvs/1/ports", {"action": "del", "port": "ring:0"})


def test_launch_refuses_a_link_planted_at_the_log_file(bed, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    log = bed.log_dir / "spp_nfv-7.log"
    log.symlink_to(victim)
    try:
        body = {
            "proc_name": "spp_nfv", "client_id": 7, "app": {"-n": "7", "-s": f"127.0.0.1:{bed.sec_port}"},
            "eal": {"-l": "0,1", "--proc-type": "secondary", "--file-prefix": bed.prefix},
        }  # fmt: skip
        res = bed.request("PUT", "/v1/primary/launch", body)
        assert res.status_code == 400, res.text
        assert "symbolic link" in res.text
        assert victim.read_text() == "keep"
        assert {"type": "nfv", "client-id": 7} not in bed.processes()
    finally:
        log.unlink()


def test_secondary_refuses_a_segment_that_is_a_link(tmp_path, segment):
    from spp.engine.shm import Segment, SegmentError

    (tmp_path / "spp_planted.seg").symlink_to(segment.path)
    with pytest.raises(SegmentError, match=r"spp_planted\.seg"):
        Segment.attach("planted", directory=tmp_path)


# -- the primary's --vdev net_pcapN ------------------------------------------------------------------


def test_primary_vdev_names_the_pcap_files_of_the_instance(tmp_path):
    frames = [bytes([i]) * 64 for i in range(1, 30)]
    rx, tx = tmp_path / "in.pcap", tmp_path / "out.pcap"
    write_pcap(rx, frames)
    n = pcap_number()
    vdev = f"--vdev=net_pcap{n},rx_pcap={rx},tx_pcap={tx}"
    with Testbed(nb_rings=2, log_dir=tmp_path / "logs", primary_eal=[vdev]) as bed:
        nfv = bed.start_nfv(1)
        nfv.add(f"pcap:{n}")
        nfv.patch(f"pcap:{n}", f"pcap:{n}")
        nfv.forward()
        wait_for(lambda: len(read_pcap(tx)) == len(frames), 15, "the frames in the tx file")
        assert read_pcap(tx) == frames
        nfv.stop()
    assert not Path(f"/tmp/spp-rx{n}.pcap").exists() and not Path(f"/tmp/spp-tx{n}.pcap").exists()


@pytest.mark.parametrize(
    "vdev,message",
    [
        ("net_pcapX,rx_pcap=/tmp/a", "net_pcapN"),
        ("net_pcap1,rx_pcap=/tmp/a,bogus=1", "unknown key"),
        ("net_pcap1,rx_pcap=/tmp/a,tx_pcap=/tmp/a", "different files"),
        ("net_tap0,iface=x", "supported are net_af_packetN"),
    ],
)
def test_primary_refuses_bad_pcap_vdevs(vdev, message):
    from spp.processes.options import OptionError
    from spp.processes.primary import collect_pcaps, collect_phys

    with pytest.raises(OptionError, match=message):
        collect_pcaps([vdev])
        collect_phys([], [vdev], None)


# -- spp_pcap --out-dir -------------------------------------------------------------------------------


def test_spp_pcap_writes_only_inside_its_out_dir(bed, tmp_path):
    out = tmp_path / "caps"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    pcap = start_pcap(bed, 5, "ring:1", out)
    try:
        out.rename(tmp_path / "caps-moved")
        out.symlink_to(victim)  # the path now leads elsewhere
        pcap.start()
        pcap.stop()
        assert list(victim.iterdir()) == []
        written = list((tmp_path / "caps-moved").iterdir())
        assert written and all(p.name.startswith("spp_pcap.") for p in written)
        for p in written:
            st = os.lstat(p)
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    finally:
        pcap.exit()


# -- the port driver itself -----------------------------------------------------------------------


@pytest.fixture
def pcap_ctx(port_ctx, tmp_path):
    port_ctx.options["pcap_dir"] = str(tmp_path)
    return port_ctx


@pytest.mark.parametrize("kind", ["link to a file", "dangling link", "fifo", "directory"])
def test_port_refuses_what_is_not_a_plain_file_at_the_tx_name(pcap_ctx, tmp_path, kind):
    tx = tmp_path / "spp-tx3.pcap"
    target = tmp_path / "target"
    if kind == "link to a file":
        target.write_bytes(b"keep")
        tx.symlink_to(target)
    elif kind == "dangling link":
        tx.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(tx)
    else:
        tx.mkdir()
    with pytest.raises(PortError, match=str(tx)):
        open_port(PortId("pcap", 3), pcap_ctx)
    if kind == "link to a file":
        assert target.read_bytes() == b"keep"
    if kind == "dangling link":
        assert not target.exists()


def test_port_refuses_a_fifo_or_a_strangers_link_as_rx_file(pcap_ctx, tmp_path):
    rx = tmp_path / "spp-rx4.pcap"
    os.mkfifo(rx)
    with pytest.raises(PortError, match="FIFO"):
        open_port(PortId("pcap", 4), pcap_ctx)  # would block forever on open if not refused
    rx.unlink()
    if os.geteuid() == 0:
        real = tmp_path / "real.pcap"
        write_pcap(real, [b"\x01" * 60])
        rx.symlink_to(real)
        os.lchown(rx, NOBODY, NOBODY)
        with pytest.raises(PortError, match="symbolic link made by uid 65534"):
            open_port(PortId("pcap", 4), pcap_ctx)
