"""sppc with a real engine (podman + runc): the image is built from Debian packages and this
project (once per content hash), and containers made by ``sppc app`` pass counted traffic through
our nfv's vhost ports.

Topology (the nfv itself runs in a container too, on a host spp-ctl and primary)::

    [pktgen container] virtio_user:1 --- vhost:1 ==nfv 1==> vhost:2 --- virtio_user:2 [forwarder
                                     <-- vhost:1 <==nfv 1== vhost:3 --- virtio_user:3  container]

The forwarder is our spp-l2fwd or dpdk-testpmd (io mode). pktgen counts what came back by
sequence number: every frame sent must return, and the nfv's counters must show them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spp.integrations.containers import Engine, Launch, build, images, state, stop
from spp.integrations.containers import engine as eng
from spp.integrations.testbed import Testbed, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.timeout(900)]

ENGINE = Engine.named("podman", "runc")
FRAMES = 3000


@pytest.fixture(scope="session")
def sppc_image() -> str:
    """The image of this source tree (built once; later sessions find it by its hash)."""
    for tool in ("podman", "runc", "mmdebstrap"):
        assert shutil.which(tool), f"{tool} missing: scripts/install.sh installs it"
    return images.build(ENGINE)


@pytest.fixture(scope="module")
def docker_engine(sppc_image: str) -> Iterator[Engine]:
    """sppc's own dockerd (own data root, no iptables, no bridge) holding the image podman built;
    stopped, and its data root removed, if this test started it."""
    started = eng.dockerd_pid() is None
    fresh_root = not eng.DOCKERD_ROOT.exists()
    eng.start_dockerd()
    docker = Engine.named("docker")
    try:
        save = subprocess.Popen(["podman", "save", sppc_image], stdout=subprocess.PIPE)
        load = subprocess.run(docker.command("load"), stdin=save.stdout, capture_output=True, timeout=600)
        assert save.wait(60) == 0 and load.returncode == 0, load.stderr
        yield docker
    finally:
        subprocess.run(docker.command("rmi", sppc_image), capture_output=True)
        if started:
            eng.stop_dockerd()
        if started and fresh_root:
            shutil.rmtree(eng.DOCKERD_ROOT, ignore_errors=True)
            shutil.rmtree(eng.DOCKERD_RUN, ignore_errors=True)


@pytest.fixture
def containers() -> Iterator[list[Launch]]:
    started: list[Launch] = []
    yield started
    for la in started:
        stop(la.name, la.engine, timeout=2)
    for la in started:
        assert state(la.name, la.engine) == "missing"


def run_detached(started: list[Launch], app: str, words: list[str], engine: Engine = ENGINE) -> Launch:
    la = build(app, words, engine=engine)
    started.append(la)
    r = subprocess.run(la.argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return la


def logs(la: Launch) -> str:
    r = subprocess.run(la.engine.command("logs", la.name), capture_output=True, text=True, timeout=30)
    return r.stdout + r.stderr


@pytest.mark.parametrize("forwarder", ["spp-l2fwd", "testpmd"])
def test_two_containers_pass_counted_traffic_through_nfv(
    tmp_path: Path, sppc_image: str, containers: list[Launch], forwarder: str
) -> None:
    pass_traffic(tmp_path, sppc_image, containers, forwarder, ENGINE)


def test_the_same_with_docker(
    tmp_path: Path, sppc_image: str, containers: list[Launch], docker_engine: Engine
) -> None:
    pass_traffic(tmp_path, sppc_image, containers, "spp-l2fwd", docker_engine)


def pass_traffic(
    tmp_path: Path, image: str, containers: list[Launch], forwarder: str, engine: Engine
) -> None:
    socks = tmp_path / "socks"
    socks.mkdir()
    with Testbed(nb_rings=1, log_dir=tmp_path / "logs") as bed:
        tag = bed.prefix[-4:]
        common = ["-ci", image, "--vhost-dir", str(socks)]
        nfv = run_detached(
            containers,
            "spp-nfv",
            ["-i", "1", "-l", "0,1", "--file-prefix", bed.prefix, "--ctl-port", str(bed.sec_port),
             "--name", f"sppc-t-nfv-{tag}", *common],
            engine,
        )  # fmt: skip
        try:
            wait_for(lambda: {"type": "nfv", "client-id": 1} in bed.processes(), 60, "nfv 1 in its container")
        except Exception:
            pytest.fail(f"nfv container did not register: {state(nfv.name, engine)}\n{logs(nfv)[-2000:]}")
        n = bed.nfv(1)
        for port in ("vhost:1", "vhost:2", "vhost:3"):
            n.add(port)
        n.patch("vhost:1", "vhost:2")
        n.patch("vhost:3", "vhost:1")
        n.forward()
        if forwarder == "spp-l2fwd":
            words = ["-l", "1", "-d", "vhost:2,vhost:3", "-p", "0x3"]
        else:
            words = ["-l", "0,1", "-m", "256", "-d", "vhost:2,vhost:3", "--forward-mode", "io",
                     "-a", "--stats-period", "1", "--nb-cores", "1", "--total-num-mbufs", "4096"]  # fmt: skip
        fwd = run_detached(containers, forwarder, [*words, "--name", f"sppc-t-fwd-{tag}", *common], engine)
        # Connected is not enough: frames sent before the app's driver has set its rings up are
        # the nfv's tx_drop (counted, but nothing would come back). Both of its ports must run.
        wait_for(
            lambda: all(n.port_stats()[p].get("running") for p in ("vhost:2", "vhost:3")),
            60,
            f"{forwarder}'s queues on vhost:2 and vhost:3",
        )
        if forwarder == "testpmd":
            # Its queues run from port start; forwarding begins after both ports have started.
            # With --stats-period its stats loop, which prints this, runs only once it has.
            wait_for(lambda: "Port statistics" in logs(fwd), 60, "testpmd to start forwarding")

        pg = build(
            "spp-pktgen",
            ["-d", "vhost:1", "--name", f"sppc-t-pg-{tag}", *common, "--",
             "--count", str(FRAMES), "--rate", "5000", "--drain", "3", "--json"],
            engine=engine,
            mode="attached",
        )  # fmt: skip
        containers.append(pg)
        r = subprocess.run(pg.argv, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-2000:] + logs(fwd)[-2000:]
        result = json.loads(r.stdout)
        stats = n.port_stats()
        # whole, for a failure below (an assertion message is cut short)
        print(f"pktgen: {json.dumps(result)}\nnfv ports: {json.dumps(stats)}", file=sys.stderr)
        # Every frame is accounted for, hop by hop: what pktgen sent reached the nfv; what the nfv
        # could not hand to a container (its ring full on a loaded machine) is counted as tx_drop;
        # what pktgen received is exactly what the nfv delivered back.
        assert result["tx"]["frames"] == FRAMES
        assert stats["vhost:1"]["rx"] == FRAMES
        assert stats["vhost:2"]["tx"] + stats["vhost:2"]["tx_drop"] == FRAMES
        assert stats["vhost:1"]["tx"] + stats["vhost:1"]["tx_drop"] == stats["vhost:3"]["rx"]
        assert result["rx"]["received"] == stats["vhost:1"]["tx"] > 0, (result, stats, logs(fwd)[-1500:])
        assert result["rx"]["duplicates"] == 0
        assert state(pg.name, engine) == "missing"  # attached mode: removed when it ended
        assert state(fwd.name, engine) == "running"
        sppc = [str(Path(sys.executable).with_name("sppc")), "--engine", engine.kind]
        listed = subprocess.run([sppc[0], "ps", *sppc[1:]], capture_output=True, text=True, timeout=60)
        assert f"{fwd.name}\trunning" in listed.stdout.splitlines()
        gone = subprocess.run([sppc[0], "stop", fwd.name, *sppc[1:]], capture_output=True, timeout=60)
        assert gone.returncode == 0 and state(fwd.name, engine) == "missing"
        # The nfv in its container leaves like a host process: it exits on DELETE, and the
        # primary's segment is still ours to remove.
        n.exit()
        wait_for(lambda: state(nfv.name, engine) in ("exited", "missing"), 30, "the nfv container to end")


def test_primary_in_a_container_serves_host_processes(
    tmp_path: Path, sppc_image: str, containers: list[Launch]
) -> None:
    """The primary runs in a container and makes the segment in the host's /dev/shm; a host nfv
    and a host pktgen attach to it and pass counted frames ring:0 -> nfv -> ring:1."""
    bed = Testbed(nb_rings=2, log_dir=tmp_path / "logs")
    try:
        bed.start_ctl()
        primary = run_detached(
            containers,
            "spp-primary",
            ["-l", "0", "-n", "2", "--file-prefix", bed.prefix, "--ctl-port", str(bed.pri_port),
             "--name", f"sppc-t-pri-{bed.prefix[-4:]}", "-ci", sppc_image],
        )  # fmt: skip
        try:
            wait_for(lambda: {"type": "primary"} in bed.processes(), 60, "the primary in its container")
        except Exception:
            pytest.fail(f"primary container: {state(primary.name, ENGINE)}\n{logs(primary)[-2000:]}")
        assert Path(f"/dev/shm/spp_{bed.prefix}.seg").exists()
        n = bed.start_nfv(1)
        n.add("ring:0")
        n.add("ring:1")
        n.patch("ring:0", "ring:1")
        n.forward()
        pktgen = [str(Path(sys.executable).with_name("spp-pktgen")), "--file-prefix", bed.prefix]
        r = subprocess.run(
            [*pktgen, "--tx", "ring:0", "--rx", "ring:1", "--count", "1000", "--drain", "1", "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["rx"]["received"] == 1000
        ring_stats = bed.ok("GET", "/v1/primary/status").json()["ring_ports"]
        assert {p["id"]: p["tx"] for p in ring_stats if p["id"] in (0, 1)} == {0: 1000, 1: 1000}
        n.exit()
        bed.ok("DELETE", "/v1/primary")
        wait_for(lambda: state(primary.name, ENGINE) in ("exited", "missing"), 30, "the primary's container")
        assert not Path(f"/dev/shm/spp_{bed.prefix}.seg").exists()  # the last one out removed it
    finally:
        bed.close()


def test_a_build_untags_only_its_own_trees_older_images(sppc_image: str, tmp_path: Path) -> None:
    """Two checkouts on one machine each keep their image: the clean-up after a build untags
    older images of the same tree and of trees that are gone, never another live tree's."""
    from tests.leakcheck import run_token

    repo = f"localhost/spp-sppc-forget{run_token()}"
    here, other, gone = tmp_path / "here", tmp_path / "other", tmp_path / "gone"
    here.mkdir()
    other.mkdir()
    made = {"keep": here, "old-here": here, "other": other, "gone": gone}
    for tag, tree in made.items():
        ctx = tmp_path / f"ctx-{tag}"
        ctx.mkdir()
        (ctx / "Containerfile").write_text(
            f"FROM {sppc_image}\nLABEL {images.TREE_LABEL}={json.dumps(str(tree))}\n"
        )
        r = subprocess.run(
            ENGINE.command("build", *ENGINE.build_opts, "--network", "none", "-t", f"{repo}:{tag}", str(ctx)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
    try:
        images._forget_older(ENGINE, repo, f"{repo}:keep", here)
        left = {t for t in made if ENGINE.image_exists(f"{repo}:{t}")}
        assert left == {"keep", "other"}
        assert ENGINE.image_exists(sppc_image), "the image the build was made from is untouched"
    finally:
        for tag in made:
            subprocess.run(ENGINE.command("rmi", f"{repo}:{tag}"), capture_output=True)
