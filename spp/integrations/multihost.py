"""Several compute "hosts" on one machine, sharing one etcd cluster, as OpenStack runs SPP.

The layout, every part real::

                       bridge <tag>br  10.A.B.1/24  (the root namespace: operator, tests, CLI)
        +-----------+----------+-----------+-----------+-----------+
     etcd e1     etcd e2    etcd e3     host h1     host h2     host h3
     .2          .3         .4          .11         .12         .13

Each member and each host is a network namespace joined to the bridge by a veth pair. A host runs
its own spp-ctl (bound to the host's address, SPP's default ports), primary (its own file prefix,
a ``phy0`` veth as ``phy:0``), spp_vf (client 1, vhost sockets in the host's own directory,
``--vhost-client`` as networking-spp wants) and spp_mirror (client 2), and, once started, its own
``spp-agent`` watching the cluster. Cutting a host off etcd is taking its veth down on the
bridge side: the host keeps its own processes and addresses, but reaches neither etcd nor the
operator until the link comes back.

Everything is named after ``tag`` (interfaces ``spt<tag>...``, namespaces ``spp<tag>-...``, the
directory ``/tmp/spp-mh-<tag>``), checked free before use, and removed by name or PID on close.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from spp.integrations.etcd_cluster import EtcdCluster, EtcdMember
from spp.integrations.netns import ip

CTL_API_PORT = 7777
CTL_PRI_PORT = 5555
CTL_SEC_PORT = 6666
VF_CLIENT_ID = 1
MIRROR_CLIENT_ID = 2


class MultiHostError(RuntimeError):
    pass


def _free_subnet() -> str:
    """A /24 in 10.0.0.0/8 that no interface or route of this machine uses; ``"10.A.B"``."""
    used = ip("-4", "-o", "addr", "show").stdout + ip("-4", "route", "show", "table", "all").stdout
    rng = random.SystemRandom()
    for _ in range(200):
        a, b = rng.randrange(100, 250), rng.randrange(0, 256)
        net = ipaddress.ip_network(f"10.{a}.{b}.0/24")
        if not any(tok.split("/")[0] and _in(tok, net) for line in used.splitlines() for tok in line.split()):
            return f"10.{a}.{b}"
    raise MultiHostError("no free 10.x.y.0/24 for the multi-host fabric")


def _in(token: str, net: ipaddress.IPv4Network) -> bool:
    try:
        other = ipaddress.ip_network(token, strict=False)
    except ValueError:
        return False
    return isinstance(other, ipaddress.IPv4Network) and other.overlaps(net) and other.prefixlen > 0


@dataclass
class Fabric:
    """The bridge and the veths: one namespace per node, all on one /24."""

    tag: str
    subnet: str = ""
    bridge: str = ""
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bridge = f"spt{self.tag}br"
        if len(self.bridge) > 15:
            raise MultiHostError(f"tag '{self.tag}' too long for interface names")

    def create(self) -> None:
        if ip("link", "show", self.bridge, check=False).returncode == 0:
            raise FileExistsError(f"link {self.bridge} exists already: not ours to reuse")
        self.subnet = _free_subnet()
        ip("link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def attach(self, node: str, host_octet: int) -> tuple[str, str, str]:
        """Make namespace ``spp<tag>-<node>`` with ``uplink`` at ``.host_octet`` on the bridge;
        returns (namespace, bridge-side link, address)."""
        ns = f"spp{self.tag}-{node}"
        outer = f"spt{self.tag}{node}"
        if ns in ip("netns", "list").stdout.split() or ip("link", "show", outer, check=False).returncode == 0:
            raise FileExistsError(f"namespace {ns} or link {outer} exists already: not ours to reuse")
        address = f"{self.subnet}.{host_octet}"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("link", "add", outer, "type", "veth", "peer", "name", "uplink", "netns", ns)
        self.links.append(outer)
        ip("link", "set", outer, "master", self.bridge)
        ip("link", "set", outer, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "uplink")
        ip("-n", ns, "link", "set", "uplink", "up")
        return ns, outer, address

    def destroy(self) -> None:
        for ns in reversed(self.namespaces):
            ip("netns", "del", ns, check=False)  # takes the veth ends inside with it
        self.namespaces.clear()
        for link in reversed(self.links):
            if ip("link", "show", link, check=False).returncode == 0:
                ip("link", "del", link, check=False)
        self.links.clear()


def _in_ns(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def agent_command() -> list[str]:
    """How to run ``spp-agent`` with this interpreter (its console script beside it, if any)."""
    script = Path(sys.executable).with_name("spp-agent")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "spp.integrations.agent"]


@dataclass
class Host:
    """One compute host: a namespace with spp-ctl, primary, spp_vf, spp_mirror and the agent."""

    name: str  # the agent's host name, the ``<host>`` of every etcd key
    ns: str
    link: str  # bridge side of its veth: down = cut off
    address: str
    prefix: str  # the primary's file prefix
    workdir: Path
    vhosts: int = 4  # vhost:0..N-1 on its one NIC (phy:0), networking-spp's default wiring
    physnet: str = "physnet1"
    mirror_lcores: str = "0,1"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def core_mask(self) -> str:
        """The NIC's mask for ``config build``: master core 1, then one core per component (a
        forwarder each way per vhost, the classifier, the merger), as devstack's mappings."""
        return hex((1 << (2 * self.vhosts + 4)) - 2)

    @property
    def mappings(self) -> str:
        """``DPDK_PORT_MAPPINGS`` of this host (``spp-agent config build --mappings``)."""
        return f"phy0#{self.physnet}#{self.vhosts}#{self.core_mask}"

    @property
    def vf_lcores(self) -> str:
        return f"1-{2 * self.vhosts + 3}"

    @property
    def nb_rings(self) -> int:
        return 2 * self.vhosts + 2

    @property
    def api(self) -> str:
        """``ADDR:PORT`` of its spp-ctl (for ``spp -b``, ``spp-agent --api``)."""
        return f"{self.address}:{CTL_API_PORT}"

    @property
    def vhost_dir(self) -> Path:
        return self.workdir / "sock"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the host's namespace, logging to ``log/<name>.log``."""
        old = self.procs.get(name)
        if old is not None and old.poll() is None:
            raise MultiHostError(f"{self.name}: {name} is running already")
        with open(self.log_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                _in_ns(self.ns, argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self.procs[name] = proc
        return proc

    def rest(self, method: str, path: str, body: Any = None, timeout: float = 10) -> httpx.Response:
        with httpx.Client(base_url=f"http://{self.api}", timeout=timeout) as http:
            return http.request(method, path, json=body)

    def processes(self) -> list[dict[str, Any]]:
        return self.rest("GET", "/v1/processes", timeout=3).json()

    def vf_status(self) -> dict[str, Any]:
        return self.rest("GET", f"/v1/vfs/{VF_CLIENT_ID}").json()

    def mirror_status(self) -> dict[str, Any]:
        return self.rest("GET", f"/v1/mirrors/{MIRROR_CLIENT_ID}").json()

    def _wait(self, name: str, ready: Any, timeout: float = 30) -> None:
        proc = self.procs[name]
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise MultiHostError(f"{self.name}: {name} exited: {self.log(name)[-2000:]}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise MultiHostError(f"{self.name}: {name} not ready after {timeout:.0f} s")
            time.sleep(0.1)

    def _registered(self, kind: str, client_id: int | None = None) -> bool:
        entry: dict[str, Any] = {"type": kind}
        if client_id is not None:
            entry["client-id"] = client_id
        return entry in self.processes()

    def start_stack(self) -> None:
        """spp-ctl, then the primary, then spp_vf and spp_mirror, each waited for."""
        for d in (self.workdir, self.vhost_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        # phy:0 of the host: a veth pair inside its namespace (wire0 is the far end of the cable)
        ip("-n", self.ns, "link", "add", "phy0", "type", "veth", "peer", "name", "wire0")
        for link in ("phy0", "wire0"):
            ip("-n", self.ns, "link", "set", link, "up")
        self.start_ctl()
        self.start_primary()
        self.start_vf()
        self.start_mirror()

    def start_ctl(self) -> None:
        argv = [sys.executable, "-m", "spp.control.ctl.main", "-b", self.address]
        self.spawn("spp-ctl", argv)
        self._wait("spp-ctl", lambda: self.processes() is not None)

    def start_primary(self) -> None:
        argv = [sys.executable, "-m", "spp.processes.primary", "-l", "0", "--file-prefix", self.prefix]
        argv += ["--", "-n", str(self.nb_rings), "-s", f"{self.address}:{CTL_PRI_PORT}", "--iface", "phy0"]
        argv += ["--log-dir", str(self.log_dir)]
        self.spawn("spp-primary", argv)
        self._wait("spp-primary", lambda: self._registered("primary"))

    def start_vf(self) -> None:
        argv = [sys.executable, "-m", "spp.processes.vf", "-l", self.vf_lcores, "--file-prefix", self.prefix]
        argv += ["--", "--client-id", str(VF_CLIENT_ID), "-s", f"{self.address}:{CTL_SEC_PORT}"]
        argv += ["--vhost-client", "--vhost-dir", str(self.vhost_dir)]
        self.spawn("spp_vf", argv)
        self._wait("spp_vf", lambda: self._registered("vf", VF_CLIENT_ID))

    def start_mirror(self) -> None:
        argv = [sys.executable, "-m", "spp.processes.mirror", "-l", self.mirror_lcores]
        argv += ["--file-prefix", self.prefix, "--", "--client-id", str(MIRROR_CLIENT_ID)]
        argv += ["-s", f"{self.address}:{CTL_SEC_PORT}"]
        self.spawn("spp_mirror", argv)
        self._wait("spp_mirror", lambda: self._registered("mirror", MIRROR_CLIENT_ID))

    def start_agent(
        self, etcd_endpoints: list[str], extra: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        argv = [*agent_command(), "--etcd", ",".join(etcd_endpoints), "--host", self.name]
        argv += ["--api", self.api, *(extra or [])]
        return self.spawn("spp-agent", argv)

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        """Stop one process by PID (SIGKILL after ``timeout``); returns its exit status."""
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(10)

    def cut(self) -> None:
        """Cut the host off the network (etcd, operator), keeping everything inside it running."""
        ip("link", "set", self.link, "down")

    def heal(self) -> None:
        ip("link", "set", self.link, "up")

    def close(self) -> None:
        """Agent first (it would reconcile what is being stopped), spp-ctl last."""
        order = ["spp-agent", "spp_mirror", "spp_vf", "spp-primary"]
        order += [n for n in self.procs if n not in (*order, "spp-ctl")] + ["spp-ctl"]
        for name in order:
            self.stop(name)
        with contextlib.suppress(OSError):
            (Path("/dev/shm") / f"spp_{self.prefix}.seg").unlink(missing_ok=True)


@dataclass
class MultiHost:
    """``n_etcd`` etcd members and ``n_hosts`` hosts on one fabric; a context manager.

    ``keep_dir`` keeps ``/tmp/spp-mh-<tag>`` (logs, etcd data) for a look after a failure.
    """

    tag: str
    n_etcd: int = 3
    n_hosts: int = 3
    keep_dir: bool = False
    host_options: dict[str, Any] = field(default_factory=dict)
    fabric: Fabric = field(init=False)
    etcd: EtcdCluster = field(init=False)
    hosts: list[Host] = field(default_factory=list)
    workdir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.fabric = Fabric(self.tag)
        self.workdir = Path(f"/tmp/spp-mh-{self.tag}")
        self.etcd = EtcdCluster([], token=f"spp-mh-{self.tag}")

    def __enter__(self) -> MultiHost:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        if self.workdir.exists():
            raise FileExistsError(f"{self.workdir} exists already: not ours to reuse")
        self.workdir.mkdir(mode=0o700)
        self.fabric.create()
        for i in range(1, self.n_etcd + 1):
            ns, _, address = self.fabric.attach(f"e{i}", 1 + i)
            member_dir = self.workdir / f"e{i}"
            member_dir.mkdir()
            self.etcd.members.append(
                EtcdMember(f"e{i}", ns, address, member_dir / "data", member_dir / "etcd.log")
            )
        for i in range(1, self.n_hosts + 1):
            ns, link, address = self.fabric.attach(f"h{i}", 10 + i)
            host = Host(
                name=f"compute{i}",
                ns=ns,
                link=link,
                address=address,
                prefix=f"mh{self.tag}h{i}",
                workdir=self.workdir / f"h{i}",
                **self.host_options,
            )
            self.hosts.append(host)
        self.etcd.start()
        for host in self.hosts:
            host.start_stack()

    @property
    def endpoints(self) -> list[str]:
        return self.etcd.endpoints

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def start_agents(self, extra: list[str] | None = None) -> None:
        for host in self.hosts:
            host.start_agent(self.endpoints, extra)

    def close(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.close()
        self.etcd.close()
        self.fabric.destroy()
        if not self.keep_dir and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
