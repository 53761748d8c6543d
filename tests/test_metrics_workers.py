"""Per-port counters of spp_vf and spp_mirror: ports other than phy and ring (here vhost:N, with
our virtio-user driver as the guests) count in the process, which reports them in a ``stats``
list after SPP's keys; ``/metrics`` exports them with ``process`` and ``port`` labels, equal to
that status, and the view's rates see them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spp.control.view.model import Snapshot, build_graph, port_counters, port_node_id
from spp.engine.pool import BufferPool
from spp.engine.shm import Segment
from spp.engine.virtio.frontend import VirtioUser
from spp.integrations.testbed import Testbed, WorkerClient, wait_for
from tests.test_engine_ports import mixed_frames
from tests.test_metrics import PORT_METRICS, samples, scrape
from tests.test_vf_components import Wire

FRAMES = mixed_frames(300, seed=13)
NBYTES = sum(map(len, FRAMES))


def launch(bed: Testbed, kind: str, client_id: int, vhost_dir: Path) -> WorkerClient:
    body = {
        "proc_name": f"spp_{kind}",
        "client_id": client_id,
        "eal": {"-l": "0,1", "--proc-type": "secondary", "--file-prefix": bed.prefix},
        "app": {
            "--client-id": str(client_id),
            "-s": f"127.0.0.1:{bed.sec_port}",
            "--vhost-dir": str(vhost_dir),
        },
    }
    bed.ok("PUT", "/v1/primary/launch", body)
    return bed.mirror(client_id) if kind == "mirror" else bed.vf(client_id)


def by_port(client: WorkerClient) -> dict[str, dict[str, Any]]:
    return {s["port"]: s for s in client.status()["stats"]}


def receive_all(pool: BufferPool, guest: VirtioUser, count: int) -> list[bytes]:
    got: list[bytes] = []

    def arrived() -> bool:
        r = guest.rx_burst(pool, 256)
        got.extend(pool.read(int(b)) for b in r)
        pool.free(r)
        return len(got) >= count

    wait_for(arrived, 20, "frames at the guest", interval=0.001)
    return got


def test_vf_and_mirror_vhost_ports_in_status_metrics_and_rates(tmp_path: Path, pool: BufferPool) -> None:
    """mirror 2: ring:0 -> vhost:0 (guest 0) and ring:1; vf 3: vhost:1 (guest 1) -> ring:2."""
    socks = tmp_path / "s"
    socks.mkdir()
    guests: list[VirtioUser] = []
    with Testbed(nb_rings=3, log_dir=tmp_path / "logs") as bed:
        wire = Wire(Segment.attach(bed.prefix))
        try:
            mirror = launch(bed, "mirror", 2, socks)
            vf = launch(bed, "vf", 3, socks)
            mirror.start("mir", 1, "mirror")
            for port, d in (("ring:0", "rx"), ("vhost:0", "tx"), ("ring:1", "tx")):
                mirror.attach(port, d, "mir")
            vf.start("fw", 1, "forward")
            vf.attach("vhost:1", "rx", "fw")
            vf.attach("ring:2", "tx", "fw")
            guests += [
                VirtioUser(str(socks / "sock0"), name="g0"),
                VirtioUser(str(socks / "sock1"), name="g1"),
            ]
            wait_for(lambda: all(g.running for g in guests), 10, "both guests attached")
            wire.push(0, FRAMES)
            assert receive_all(pool, guests[0], len(FRAMES)) == FRAMES
            assert wire.take(1, len(FRAMES)) == FRAMES
            bufs = pool.alloc_frames(FRAMES)
            sent = 0

            def all_sent() -> bool:
                nonlocal sent
                sent += guests[1].tx_burst(pool, bufs[sent:])
                return sent == len(bufs)

            wait_for(all_sent, 20, "guest 1 to send", interval=0.001)
            assert wire.take(2, len(FRAMES)) == FRAMES

            # status: SPP's keys first, then every port in use with its own counters
            st = mirror.status()
            assert list(st) == ["client-id", "ports", "master-lcore", "components", "stats"]
            mports, vports = by_port(mirror), by_port(vf)
            assert sorted(mports) == ["ring:0", "ring:1", "vhost:0"] and sorted(vports) == [
                "ring:2",
                "vhost:1",
            ]
            assert mports["vhost:0"]["tx"] == len(FRAMES) and mports["vhost:0"]["tx_bytes"] == NBYTES
            assert mports["vhost:0"]["tx_drop"] == 0 and mports["ring:0"]["rx_bytes"] == NBYTES
            assert vports["vhost:1"]["rx"] == len(FRAMES) and vports["vhost:1"]["rx_bytes"] == NBYTES
            assert vports["vhost:1"]["connected"] is True  # the vhost port's peer, as nfv's stats
            assert vports["vhost:1"]["peer"]["pid"] == mports["vhost:0"]["peer"]["pid"] == os.getpid()

            # /metrics: per (process, port), equal to that status; phy/ring from the primary, once
            fams = scrape(bed)
            own = {("mirror:2", p): s for p, s in mports.items()} | {
                ("vf:3", p): s for p, s in vports.items()
            }
            for metric, key in PORT_METRICS.items():
                series = samples(fams, metric)
                for labels in series:
                    assert {k for k, _ in labels} == {"process", "port"}, (metric, labels)
                got = {(dict(k)["process"], dict(k)["port"]): v for k, v in series.items()}
                for proc_port in own:
                    assert got[proc_port] == own[proc_port][key], (metric, proc_port)

            # the page's and the pictures' rates count the vhost ports
            snap = Snapshot(
                processes=[
                    {"type": "primary"},
                    {"type": "mirror", "client-id": 2},
                    {"type": "vf", "client-id": 3},
                ],
                statuses={"primary": bed.primary_status(), "mirror:2": mirror.status(), "vf:3": vf.status()},
            )
            fe = [n for n in build_graph(snap).nodes.values() if n.kind == "frontend"]
            assert [(n.detail, n.group) for n in fe] == [
                (f"pid {os.getpid()}", "app")
            ]  # this process: both guests
            counters = port_counters(snap)
            assert counters[port_node_id("vhost:0")]["tx"] == len(FRAMES)
            assert counters[port_node_id("vhost:1")]["rx_bytes"] == NBYTES
        finally:
            for g in guests:
                g.close()
            wire.pool.close()
