"""Process lifecycle that scripts can rely on: exit, relaunch, failed launches, a primary
without a forwarder lcore. Real spp-ctl, primary and secondaries, driven over REST."""

from __future__ import annotations

from typing import Any

import pytest

from spp.integrations.testbed import Testbed, launch_pcap

CYCLES = 20


@pytest.fixture
def bed():
    with Testbed(nb_rings=4) as b:
        yield b


def launch_body(bed: Testbed, kind: str, client_id: int, **app: Any) -> dict[str, Any]:
    id_opt = "-n" if kind == "nfv" else "--client-id"
    return {
        "proc_name": f"spp_{kind}",
        "client_id": client_id,
        "eal": {"-l": "0,1", "--proc-type": "secondary", "--file-prefix": bed.prefix},
        "app": {id_opt: str(client_id), "-s": f"127.0.0.1:{bed.sec_port}", **app},
    }


@pytest.mark.parametrize("kind", ["nfv", "vf", "mirror", "pcap"])
def test_delete_then_relaunch_same_id(bed, kind, tmp_path):
    """DELETE returns once the process is gone: relaunching the id right after always works."""
    for cycle in range(CYCLES):
        if kind == "pcap":
            launch_pcap(bed, 3, "ring:0", tmp_path)
        else:
            r = bed.request("PUT", "/v1/primary/launch", launch_body(bed, kind, 3))
            assert r.status_code == 204, f"cycle {cycle}: {r.status_code} {r.text}"
        assert {"type": kind, "client-id": 3} in bed.processes()
        r = bed.request("DELETE", f"/v1/{kind}s/3")
        assert r.status_code == 204, f"cycle {cycle}: {r.status_code} {r.text}"
        assert {"type": kind, "client-id": 3} not in bed.processes()


def test_primary_with_one_lcore_adds_rings(bed):
    """``-l 0``: no forwarder, but ``add ring:N`` / ``del ring:N`` work as in SPP's primary."""
    assert bed.primary_lcores == "0"
    bed.ok("PUT", "/v1/primary/ports", {"action": "add", "port": "ring:1"})
    bed.ok("PUT", "/v1/primary/ports", {"action": "add", "port": "ring:2"})
    bed.ok("PUT", "/v1/primary/patches", {"src": "ring:1", "dst": "ring:2"})
    r = bed.request("PUT", "/v1/primary/ports", {"action": "add", "port": "ring:9"})
    assert r.status_code == 400 and "ring:9 does not exist" in r.text
    r = bed.request("PUT", "/v1/primary/forward", {"action": "start"})
    assert r.status_code == 400 and "no forwarder lcore" in r.text
    bed.ok("PUT", "/v1/primary/ports", {"action": "del", "port": "ring:2"})
    # A secondary uses the same ring meanwhile.
    nfv = bed.launch_nfv(1)
    nfv.add("ring:1")
    assert "ring:1" in nfv.status()["ports"]
