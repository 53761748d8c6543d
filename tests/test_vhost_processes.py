"""vhost:N in the other processes: spp_vf (two lanes sharing the devices) and the primary's
forwarder, with our virtio-user driver as the guests."""

from __future__ import annotations

import pytest

from spp.engine.virtio.frontend import VirtioUser
from spp.integrations.testbed import Testbed, wait_for
from tests.test_engine_ports import mixed_frames

FRAMES = mixed_frames(200, seed=21)


def pass_frames(pool, src: VirtioUser, dst: VirtioUser, frames: list[bytes]) -> list[bytes]:
    bufs = pool.alloc_frames(frames)
    sent, got = 0, []

    def moved() -> bool:
        nonlocal sent
        if sent < len(bufs):
            sent += src.tx_burst(pool, bufs[sent : min(len(bufs), len(got) + 128)])
        r = dst.rx_burst(pool, 256)
        got.extend(pool.read(int(b)) for b in r)
        pool.free(r)
        return len(got) >= len(frames)

    wait_for(moved, 20, "frames across", interval=0.001)
    return got


@pytest.fixture
def guests(tmp_path):
    socks = tmp_path / "s"
    socks.mkdir()
    made: list[VirtioUser] = []

    def make(n: int) -> VirtioUser:
        made.append(VirtioUser(str(socks / f"sock{n}"), name=f"guest{n}"))
        return made[-1]

    make.dir = str(socks)
    yield make
    for g in made:
        g.close()


def test_vf_forwards_between_two_vhost_ports_on_two_lanes(tmp_path, guests, pool):
    """fwd1 (lcore 1): vhost:0 -> vhost:1; fwd2 (lcore 2): vhost:1 -> vhost:0. Each lane opens its
    own handles; the devices (sockets, rings) are shared."""
    with Testbed(nb_rings=2, log_dir=tmp_path / "logs") as bed:
        body = {
            "proc_name": "spp_vf",
            "client_id": 1,
            "eal": {"-l": "0,1,2", "--proc-type": "secondary", "--file-prefix": bed.prefix},
            "app": {"--client-id": "1", "-s": f"127.0.0.1:{bed.sec_port}", "--vhost-dir": guests.dir},
        }
        bed.ok("PUT", "/v1/primary/launch", body)
        vf = bed.vf(1)
        vf.start("fwd1", 1, "forward")
        vf.start("fwd2", 2, "forward")
        vf.attach("vhost:0", "rx", "fwd1")
        vf.attach("vhost:1", "tx", "fwd1")
        vf.attach("vhost:1", "rx", "fwd2")
        vf.attach("vhost:0", "tx", "fwd2")
        a, b = guests(0), guests(1)
        wait_for(lambda: a.running and b.running, 10, "both guests attached")
        assert pass_frames(pool, a, b, FRAMES) == FRAMES
        assert pass_frames(pool, b, a, FRAMES[::-1]) == FRAMES[::-1]
        st = vf.status()
        assert st["ports"] == ["vhost:0", "vhost:1"]
        assert [c["counters"]["tx"] for c in st["components"]] == [200, 200]


def test_primary_forwarder_patches_vhost_ports(tmp_path, guests, pool):
    with Testbed(
        nb_rings=2,
        primary_lcores="0,1",
        log_dir=tmp_path / "logs",
        extra_primary_args=["--vhost-dir", guests.dir],
    ) as bed:
        for port in ("vhost:0", "vhost:1"):
            bed.ok("PUT", "/v1/primary/ports", {"action": "add", "port": port})
        bed.ok("PUT", "/v1/primary/patches", {"src": "vhost:0", "dst": "vhost:1"})
        bed.ok("PUT", "/v1/primary/forward", {"action": "start"})
        a, b = guests(0), guests(1)
        wait_for(lambda: a.running and b.running, 10, "both guests attached")
        assert pass_frames(pool, a, b, FRAMES) == FRAMES
