"""Who is on a vhost socket: the back-end reads the front-end's pid (SO_PEERCRED) when it
connects, tells what it is from /proc, reports it as ``peer`` in the port's status, and the
topology draws that VM or application instead of an anonymous front-end. Real peers:
dpdk-testpmd's net_virtio_user (an application) and a QEMU started by ``spp vm`` (a VM)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spp.control.cli.client import SppCtlClient
from spp.control.cli.topo_view import collect_snapshot
from spp.control.view.model import Graph, build_graph
from spp.control.view.svg import render_svg
from spp.integrations.containers.engine import PODMAN_RUN_OPTS
from spp.integrations.testbed import Secondary, Testbed, wait_for
from spp.integrations.vm.image import find_installed_kernel
from tests.testpmd import Testpmd, needs_testpmd


@pytest.fixture
def sock_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sockets"
    d.mkdir()
    return d


def peer_of(nfv: Secondary, port: str) -> dict[str, Any] | None:
    return nfv.port_stats()[port].get("peer")


def graph(bed: Testbed) -> Graph:
    snap, warnings = collect_snapshot(SppCtlClient("127.0.0.1", bed.api_port))
    assert warnings == []
    return build_graph(snap)


def frontends(g: Graph) -> dict[str, tuple[str, str]]:
    """label -> (detail, group) of the front-end nodes, and which port each is wired to."""
    return {n.label: (n.detail, n.group) for n in g.nodes.values() if n.kind == "frontend"}


@needs_testpmd
def test_testpmd_virtio_user_is_drawn_as_an_application(tmp_path: Path, sock_dir: Path) -> None:
    with Testbed(nb_rings=1, log_dir=tmp_path / "logs") as bed:
        nfv = bed.start_nfv(1, extra=["--vhost-dir", str(sock_dir)])
        nfv.add("vhost:0")
        with Testpmd(f"net_virtio_user0,path={sock_dir}/sock0", "io", tmp_path / "testpmd.log") as tp:
            tp.wait_output("testpmd>")
            wait_for(lambda: peer_of(nfv, "vhost:0") is not None, 20, "testpmd to connect")
            peer = peer_of(nfv, "vhost:0")
            assert peer == {
                "pid": tp.proc.pid,
                "kind": "app",
                "name": "dpdk-testpmd",
                "program": "dpdk-testpmd",
            }
            g = graph(bed)
            assert frontends(g) == {"app dpdk-testpmd": (f"pid {tp.proc.pid}", "app")}
            fe = next(n.id for n in g.nodes.values() if n.kind == "frontend")
            assert any(e.src == "port-vhost-0" and e.dst == fe and e.kind == "virtio" for e in g.edges)
            svg = render_svg(g)
            assert (
                ">app dpdk-testpmd</text>" in svg and 'aria-label="app dpdk-testpmd, virtio front-end' in svg
            )
        # gone with its process: the socket is drawn alone again
        wait_for(lambda: not nfv.port_stats()["vhost:0"]["connected"], 20, "testpmd to go")
        assert peer_of(nfv, "vhost:0") is None
        assert frontends(graph(bed)) == {}


@pytest.mark.slow
def test_qemu_started_by_spp_vm_is_drawn_as_a_vm_with_its_name(
    tmp_path: Path, sock_dir: Path, vm_state: Path
) -> None:
    """QEMU connects its vhost-user NICs as it starts, before the guest boots: that is enough."""
    kernel = find_installed_kernel()
    if kernel is None:
        pytest.skip("no kernel in /boot")
    initrd = kernel.vmlinuz.parent / kernel.vmlinuz.name.replace("vmlinuz", "initrd.img")
    with Testbed(nb_rings=1, log_dir=tmp_path / "logs") as bed:
        nfv = bed.start_nfv(1, extra=["--vhost-dir", str(sock_dir)])
        nfv.add("vhost:0")
        nfv.add("vhost:1")
        vm = [sys.executable, "-m", "spp.integrations.vm.cli", "--state-dir", str(vm_state)]
        initrd_arg = str(initrd if initrd.exists() else kernel.vmlinuz)
        start = ["start", "6", "-d", "0,1", "--accel", "tcg", "--name", "probe", "--vhost-dir", str(sock_dir),
                 "--kernel", str(kernel.vmlinuz), "--initrd", initrd_arg]  # fmt: skip
        r = subprocess.run([*vm, *start], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run([*vm, "status", "6", "--json"], capture_output=True, text=True, check=True)
        pid = json.loads(r.stdout)["pid"]
        for port in ("vhost:0", "vhost:1"):
            wait_for(lambda p=port: peer_of(nfv, p) is not None, 60, f"QEMU on {port}")
            peer = peer_of(nfv, port)
            assert peer is not None
            assert (peer["pid"], peer["kind"], peer["name"]) == (pid, "vm", "probe")
            assert str(peer["program"]).startswith("qemu-system")
        g = graph(bed)
        # one VM with two NICs: one node, two virtio links
        assert frontends(g) == {"VM probe": (f"pid {pid}", "vm")}
        fe = next(n.id for n in g.nodes.values() if n.kind == "frontend")
        assert sorted(e.src for e in g.edges if e.dst == fe and e.kind == "virtio") == [
            "port-vhost-0",
            "port-vhost-1",
        ]
        assert ">VM probe</text>" in render_svg(g)


def local_image() -> str | None:
    """An image already on this machine with python3 in it (sppc's base or its image)."""
    if shutil.which("podman") is None:
        return None
    r = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
    )
    names = [
        n for n in r.stdout.split() if n.startswith(("localhost/spp-debian-base:", "localhost/spp-sppc:"))
    ]
    return names[0] if names else None


@pytest.mark.slow
@pytest.mark.root
def test_a_container_is_drawn_with_its_name(tmp_path: Path, sock_dir: Path) -> None:
    """A process in a podman container connects to vhost:0; the back-end names the container."""
    image = local_image()
    if image is None:
        pytest.skip("no sppc image here (sppc build makes one)")
    name = f"spp-peer-test-{os.getpid()}"
    connect = "import socket, time; s = socket.socket(socket.AF_UNIX); s.connect('/s/sock0'); time.sleep(120)"
    with Testbed(nb_rings=1, log_dir=tmp_path / "logs") as bed:
        nfv = bed.start_nfv(1, extra=["--vhost-dir", str(sock_dir)])
        nfv.add("vhost:0")
        run = ["podman", "run", "-d", "--rm", "--name", name, *PODMAN_RUN_OPTS, "-v", f"{sock_dir}:/s", image,
               "python3", "-c", connect]  # fmt: skip
        try:
            r = subprocess.run(run, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            wait_for(lambda: peer_of(nfv, "vhost:0") is not None, 60, "the container to connect")
            peer = peer_of(nfv, "vhost:0")
            assert peer is not None and (peer["kind"], peer["name"]) == ("container", name)
            assert peer["program"] == "python3"
            assert frontends(graph(bed)) == {f"container {name}": (f"pid {peer['pid']}", "container")}
        finally:
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=60)
