"""One compute host for spp-agent tests: a veth "NIC" into a namespace, spp-ctl, the primary,
spp_vf 1 (``--vhost-client``, sockets in a directory of the test) and spp_mirror 2, as real
processes; the agent itself as a real ``spp-agent`` process; etcd ops from the test.

Layout of the default configuration (``00:04.0#phys1#2#0xfe``, mirrors ``2#0x302``): vhost 0
and 1 on phys1 (rings 0-3), spp_vf cores 2-7 (master 1), mirrors on cores 8 and 9 with rings
4/5 and 6/7.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from spp.engine.pool import BufferPool
from spp.engine.virtio.frontend import VirtioUser
from spp.integrations.agent import keys, tools
from spp.integrations.agent.etcd import KV, Etcd, parse_endpoints
from spp.integrations.agent.localetcd import LocalEtcd
from spp.integrations.testbed import Testbed, wait_for
from tests.netutil import VethNs, make_frame, veth_pair_in_netns

T = TypeVar("T")
MAPPINGS = "00:04.0#phys1#2#0xfe"
MIRRORS = "2#0x302"
VF_LCORES, MIRROR_LCORES = "1-7", "1,8,9"


def etcd_run(endpoints: str, op: Callable[[Etcd], Awaitable[T]]) -> T:
    """Run one coroutine on a fresh client (tests are synchronous)."""

    async def main() -> T:
        etcd = Etcd(parse_endpoints(endpoints))
        try:
            return await etcd.call_any(op)
        finally:
            await etcd.close()

    return asyncio.run(main())


class EtcdView:
    """Synchronous reads and writes for assertions."""

    def __init__(self, endpoints: str) -> None:
        self.endpoints = endpoints

    def get(self, key: str) -> str | None:
        return etcd_run(self.endpoints, lambda e: e.get(key))

    def kv(self, key: str) -> KV | None:
        kvs, _ = etcd_run(self.endpoints, lambda e: e.get_prefix(key))
        return next((kv for kv in kvs if kv.key == key), None)

    def prefix(self, prefix: str) -> dict[str, str]:
        kvs, _ = etcd_run(self.endpoints, lambda e: e.get_prefix(prefix))
        return {kv.key: kv.value for kv in kvs}

    def put(self, key: str, value: str) -> None:
        etcd_run(self.endpoints, lambda e: e.put(key, value))

    def delete(self, key: str) -> None:
        etcd_run(self.endpoints, lambda e: e.delete(key))


class AgentHost:
    """A compute host's whole stack plus its agent. ``with AgentHost(endpoints, "h1", tmp) as h``."""

    def __init__(
        self,
        etcd_endpoints: str,
        host: str,
        tmp: Path,
        mappings: str = MAPPINGS,
        mirror: str | None = MIRRORS,
        netns: bool = True,
    ) -> None:
        self.endpoints, self.host, self.tmp = etcd_endpoints, host, Path(tmp)
        self.mappings, self.mirror = mappings, mirror
        self.etcd = EtcdView(etcd_endpoints)
        self.vdir = Path(tempfile.mkdtemp(prefix="spp-agent-vh-", dir=self.tmp))
        self.agent: subprocess.Popen[bytes] | None = None
        self.agent_log_path = self.tmp / f"agent-{host}.log"
        self._stack = contextlib.ExitStack()
        self.wire: VethNs | None = None
        self.bed: Testbed | None = None
        self.netns = netns
        #: :meth:`snapshot` of the host as built, for ``bare_host``
        self.bare: tuple[Any, ...] | None = None

    def __enter__(self) -> AgentHost:
        try:
            self.wire = self._stack.enter_context(veth_pair_in_netns())
            self.bed = self._stack.enter_context(
                Testbed(ifaces=[self.wire.host_if], nb_rings=8, log_dir=self.tmp / f"logs-{self.host}")
            )
            self.start_vf(wait=False)  # both start at once: each takes a second or two
            if self.mirror:
                self.start_mirror(wait=False)
                self.bed.wait_worker("mirror", 2)
            self.bed.wait_worker("vf", 1)
            etcd_run(self.endpoints, lambda e: tools.config_build(e, self.host, self.mappings, self.mirror))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stop_agent()
        self._stack.close()

    # -- processes -------------------------------------------------------------------------------

    def start_vf(self, wait: bool = True) -> None:
        assert self.bed is not None
        extra = ["--vhost-client", "--vhost-dir", str(self.vdir)]
        self.bed.start_worker("vf", 1, lcores=VF_LCORES, extra=extra, wait=wait)

    def start_mirror(self, wait: bool = True) -> None:
        assert self.bed is not None
        self.bed.start_worker("mirror", 2, lcores=MIRROR_LCORES, wait=wait)

    def kill_worker(self, name: str) -> None:
        """SIGKILL a secondary the bed started (``spp_vf-1``, ``spp_mirror-2``) and wait until
        spp-ctl has dropped it."""
        assert self.bed is not None
        proc = self.bed.procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        kind, _, cid = name.removeprefix("spp_").partition("-")
        wait_for(
            lambda: {"type": kind, "client-id": int(cid)} not in self.bed.processes(), 10, f"{name} gone"
        )

    def start_agent(self, *extra: str, wait: bool = True) -> subprocess.Popen[bytes]:
        assert self.bed is not None and (self.agent is None or self.agent.poll() is not None)
        argv = [sys.executable, "-m", "spp.integrations.agent", "--etcd", self.endpoints, "--host", self.host]
        argv += ["--api", f"127.0.0.1:{self.bed.api_port}", *extra]
        builds = self.agent_log().count("data plane built")
        with open(self.agent_log_path, "ab") as log:
            self.agent = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if wait:
            wait_for(lambda: self.agent_log().count("data plane built") > builds, 30, "the agent to start")
        return self.agent

    def pause_agent(self) -> None:
        assert self.agent is not None
        os.kill(self.agent.pid, signal.SIGSTOP)

    def resume_agent(self) -> None:
        assert self.agent is not None
        os.kill(self.agent.pid, signal.SIGCONT)

    def stop_agent(self, sig: int = signal.SIGTERM) -> int | None:
        if self.agent is None:
            return None
        if self.agent.poll() is None:
            if sig == signal.SIGSTOP:
                raise ValueError("use pause_agent")
            os.kill(self.agent.pid, signal.SIGCONT)
            os.kill(self.agent.pid, sig)
            try:
                self.agent.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.agent.pid, signal.SIGUSR1)  # its stacks, into the log
                time.sleep(1)
                self.agent.kill()
                self.agent.wait(5)
                # shown with the failing test: where it hung
                print(f"spp-agent did not stop on signal {sig}; its log ends:", file=sys.stderr)
                print(self.agent_log()[-20000:], file=sys.stderr)
        code, self.agent = self.agent.returncode, None
        return code

    def agent_log(self) -> str:
        with contextlib.suppress(OSError):
            return self.agent_log_path.read_text(errors="replace")
        return ""

    # -- the mechanism driver, from the test --------------------------------------------------------

    def plug(self, port_id: str, mac: str, vlan: int | None = None, timeout: float = 30) -> tools.PlugResult:
        return etcd_run(
            self.endpoints, lambda e: tools.plug(e, self.host, "phys1", mac, port_id, vlan, timeout=timeout)
        )

    def unplug(self, port_id: str, wait: float = 30) -> bool:
        return etcd_run(self.endpoints, lambda e: tools.unplug(e, self.host, port_id, wait))

    def request_plug(self, port_id: str, mac: str, vhost_id: int, vlan: int | None = None) -> None:
        """What the driver writes, without waiting (claim, bind_port, action)."""
        key = keys.vhost_key(self.host, "phys1", vhost_id)
        assert etcd_run(self.endpoints, lambda e: e.replace(key, keys.FREE, port_id))
        bp = keys.BindPort(mac, vhost_id, vlan)
        self.etcd.put(keys.key("bind_port", self.host, port_id), bp.dumps())
        self.etcd.put(keys.key("action", self.host, port_id), keys.PLUG)

    def port_status(self, port_id: str) -> str | None:
        return self.etcd.get(keys.key("port_status", self.host, port_id))

    def wait_up(self, port_id: str, timeout: float = 30) -> None:
        wait_for(lambda: self.port_status(port_id) == keys.UP, timeout, f"port {port_id} up", interval=0.1)

    def wait_gone(self, port_id: str, timeout: float = 30) -> None:
        key = keys.key("action", self.host, port_id)
        wait_for(lambda: self.etcd.get(key) is None, timeout, f"port {port_id} unplugged", interval=0.1)

    def host_keys(self) -> dict[str, str]:
        return self.etcd.prefix(keys.ROOT)

    def snapshot(self) -> tuple[Any, ...]:
        """What a bare host looks like: wiring, classifier table, VLAN operations, and the keys
        (but the agent's liveness, whose value names its pid)."""
        state = {k: v for k, v in self.host_keys().items() if k != keys.agent_key(self.host)}
        return self.wiring(), self.table(), self.vlan_ops(), state

    def make_bare(self) -> None:
        """Back to a host with nothing plugged, through the agent (started again if a test
        stopped it): every tap flow deleted, every port unplugged."""
        if self.agent is None:
            self.start_agent()
        for flow in self.etcd.prefix(keys.host_prefix("tap_action", self.host)):
            flow_id = flow.rsplit("/", 1)[1]
            assert etcd_run(self.endpoints, lambda e, f=flow_id: tools.tap_delete(e, f, self.host, wait=30))
        for action in self.etcd.prefix(keys.host_prefix("action", self.host)):
            assert self.unplug(action.rsplit("/", 1)[1])

    # -- the data plane ----------------------------------------------------------------------------------

    def vf_status(self) -> dict[str, Any]:
        assert self.bed is not None
        return self.bed.vf(1).status()

    def mirror_status(self) -> dict[str, Any]:
        assert self.bed is not None
        return self.bed.mirror(2).status()

    def table(self) -> list[tuple[str, str, str]]:
        return sorted(
            (e["type"], e["value"].lower(), e["port"]) for e in self.vf_status()["classifier_table"]
        )

    def vlan_ops(self) -> dict[tuple[str, str, str], str]:
        """(component, dir, port) -> operation[:id], for every port with a VLAN operation."""
        out = {}
        for c in self.vf_status()["components"]:
            for d in ("rx", "tx"):
                for p in c.get(f"{d}_port", []):
                    op = p["vlan"]["operation"]
                    if op != "none":
                        out[(c["name"], d, p["port"])] = op + (f":{p['vlan']['id']}" if op == "add" else "")
        return out

    def wiring(self) -> dict[str, tuple[list[str], list[str]]]:
        """component -> (rx ports, tx ports) of spp_vf and spp_mirror."""
        out = {}
        procs = [self.vf_status()] + ([self.mirror_status()] if self.mirror else [])
        for st in procs:
            for c in st["components"]:
                if c.get("name"):
                    out[c["name"]] = (
                        sorted(p["port"] for p in c["rx_port"]),
                        sorted(p["port"] for p in c["tx_port"]),
                    )
        return out


@pytest.fixture
def etcd() -> Iterator[LocalEtcd]:
    """A private etcd on loopback for one test (tests kill and restart it)."""
    with LocalEtcd() as e:
        yield e


@pytest.fixture
def host(etcd: LocalEtcd, tmp_path: Path) -> Iterator[AgentHost]:
    """Host ``h1`` on ``etcd`` with its agent running. Afterwards the agent (if the test left
    one running) must stop cleanly on SIGTERM, and no agent may have logged a traceback."""
    with AgentHost(etcd.endpoint, "h1", tmp_path) as h:
        h.start_agent()
        yield h
        if h.agent is not None:
            assert h.stop_agent() == 0, h.agent_log()[-3000:]
        assert "Traceback" not in h.agent_log(), h.agent_log()[-3000:]


@pytest.fixture(scope="module")
def shared_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHost]:
    """One host ``h1`` with its agent for a whole module (a host takes seconds to build): for
    tests that only plug, unplug and tap, through ``bare_host``."""
    with LocalEtcd() as e, AgentHost(e.endpoint, "h1", tmp_path_factory.mktemp("agent-h1")) as h:
        h.start_agent()
        h.bare = h.snapshot()
        yield h
        if h.agent is not None:
            assert h.stop_agent() == 0, h.agent_log()[-3000:]
        assert "Traceback" not in h.agent_log(), h.agent_log()[-3000:]


@pytest.fixture
def bare_host(shared_host: AgentHost) -> Iterator[AgentHost]:
    """``shared_host`` as it was built: what an earlier test left is unplugged through the
    agent first, and the result checked (wiring, table, VLAN operations, every key)."""
    h = shared_host
    h.make_bare()
    assert h.snapshot() == h.bare
    seen = h.agent_log().count("Traceback")
    yield h
    assert h.agent_log().count("Traceback") == seen, h.agent_log()[-3000:]


@contextlib.contextmanager
def guests(vdir: Path, *ids: int) -> Iterator[dict[int, VirtioUser]]:
    """Virtio-user "VMs" on ``sock<id>`` (QEMU's side: the socket server)."""
    made = {i: VirtioUser(str(vdir / f"sock{i}"), server=True, name=f"vm{i}") for i in ids}
    try:
        wait_for(lambda: all(g.running for g in made.values()), 20, "spp_vf to attach the guests")
        yield made
    finally:
        for g in made.values():
            g.close()


def drain(pool: BufferPool, guest: VirtioUser) -> list[bytes]:
    got = guest.rx_burst(pool, 256)
    frames = [pool.read(int(b)) for b in got]
    pool.free(got)
    return frames


def receive(pool: BufferPool, guest: VirtioUser, count: int, timeout: float = 10) -> list[bytes]:
    """Frames from ``guest``'s receive queue that the test made (its source MAC), until
    ``count`` arrived (or the time is up: then what arrived)."""
    out: list[bytes] = []

    def enough() -> bool:
        out.extend(f for f in drain(pool, guest) if f[6:12] == SRC)
        return len(out) >= count

    with contextlib.suppress(Exception):
        wait_for(enough, timeout, "frames", interval=0.01)
    return out


def send_from_guest(pool: BufferPool, guest: VirtioUser, frames: list[bytes]) -> None:
    bufs = pool.alloc_frames(frames)
    sent = 0

    def done() -> bool:
        nonlocal sent
        sent += guest.tx_burst(pool, bufs[sent:])
        return sent == len(bufs)

    wait_for(done, 10, "the guest to send", interval=0.01)


SRC = bytes.fromhex("02aa55000001")  # tests.netutil.TEST_SRC


def frames_to(mac: str, n: int, vlan: int | None = None, first: int = 0) -> list[bytes]:
    dst = bytes.fromhex(mac.replace(":", ""))
    tag = (0x8100, vlan) if vlan is not None else ()
    return [make_frame(first + i, 80, dst=dst, vlan=tag) for i in range(n)]
