"""A whole patch panel on this host from Python: spp-ctl, the primary and secondaries as real
processes, driven over the REST API. The demo, the end-to-end tests and the benchmarks all use it,
so each scenario is a few readable lines (in the spirit of Mininet's topology API)::

    with Testbed(ifaces=["veth0", "veth1"]) as bed:
        bed.launch_nfv(1)
        bed.nfv(1).patch("phy:0", "phy:1")
        bed.nfv(1).forward()

Everything started is stopped by PID on exit, and the shared segment and the log directory are
removed. A testbed only ever talks to the spp-ctl it started: when one of its ports is taken it
refuses to start, and it checks that the process answering on the REST port is its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from spp.engine.shm import Segment, SegmentError, segment_path
from spp.instance import log_dir as instance_log_dir


class TestbedError(RuntimeError):
    __test__ = False  # an exception, not a pytest class


#: spp-ctl's default ports: never handed out, a user's spp-ctl may want them at any time
_SPP_PORTS = frozenset({5555, 6666, 7777})


def _ephemeral_range_start() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a listener about to be started.

    Taken below the kernel's ephemeral range, at random: a port the kernel gave us from that range
    could go to any outgoing connection (a busy host makes many) before our listener binds it,
    while one below it is only ever taken by a listener that chose the same number.
    """
    top = _ephemeral_range_start()
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(max(1024, top - 20000), top)
        if port not in _SPP_PORTS and not port_in_use(port):
            return port
    with socket.socket() as s:  # that range is full: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP listener could not be bound on ``host:port`` now (someone else has it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as spp-ctl binds
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _listening_socket_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on ``port`` (any address), from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    found.add(inode)
    return found


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on TCP ``port``."""
    wanted = {f"socket:[{inode}]" for inode in _listening_socket_inodes(port)}
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(fd) in wanted:
                return True
    return False


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TestbedError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Secondary:
    """REST calls of one nfv, named like the CLI's ``nfv N; ...`` sub-commands."""

    def __init__(self, bed: Testbed, kind: str, client_id: int) -> None:
        self.bed, self.kind, self.id = bed, kind, client_id
        self.base = f"/v1/{kind}s/{client_id}"

    def status(self) -> dict[str, Any]:
        return self.bed.ok("GET", self.base).json()

    def add(self, port: str) -> None:
        self.bed.ok("PUT", f"{self.base}/ports", {"action": "add", "port": port})

    def delete(self, port: str) -> None:
        self.bed.ok("PUT", f"{self.base}/ports", {"action": "del", "port": port})

    def patch(self, src: str, dst: str) -> None:
        self.bed.ok("PUT", f"{self.base}/patches", {"src": src, "dst": dst})

    def reset(self) -> None:
        self.bed.ok("DELETE", f"{self.base}/patches")

    def forward(self) -> None:
        self.bed.ok("PUT", f"{self.base}/forward", {"action": "start"})

    def stop(self) -> None:
        self.bed.ok("PUT", f"{self.base}/forward", {"action": "stop"})

    def exit(self) -> None:
        self.bed.ok("DELETE", self.base)

    def port_stats(self) -> dict[str, dict[str, int]]:
        return {s["port"]: s for s in self.status().get("stats", [])}


class WorkerClient:
    """REST calls of one spp_vf or spp_mirror (``/v1/vfs/N``, ``/v1/mirrors/N``), named like the
    CLI's ``vf N; ...`` sub-commands."""

    def __init__(self, bed: Testbed, kind: str, client_id: int) -> None:
        self.bed, self.kind, self.id = bed, kind, client_id
        self.base = f"/v1/{kind}s/{client_id}"

    def status(self) -> dict[str, Any]:
        return self.bed.ok("GET", self.base).json()

    def component(self, name: str) -> dict[str, Any]:
        for comp in self.status()["components"]:
            if comp.get("name") == name:
                return comp
        raise TestbedError(f"{self.kind} {self.id} has no component '{name}'")

    def start(self, name: str, core: int, comp_type: str) -> None:
        self.bed.ok("POST", f"{self.base}/components", {"name": name, "core": core, "type": comp_type})

    def stop(self, name: str) -> None:
        self.bed.ok("DELETE", f"{self.base}/components/{name}")

    def wire(self, name: str, core: int, comp_type: str, rx: Sequence[str], tx: Sequence[str]) -> None:
        """Start component ``name`` and attach its ``rx`` then its ``tx`` ports, in order (no
        VLAN ops): a component wired in one call."""
        self.start(name, core, comp_type)
        for port in rx:
            self.attach(port, "rx", name)
        for port in tx:
            self.attach(port, "tx", name)

    def attach(self, port: str, direction: str, name: str, vlan: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"action": "attach", "port": port, "dir": direction}
        if vlan is not None:
            body["vlan"] = vlan
        self.bed.ok("PUT", f"{self.base}/components/{name}/ports", body)

    def detach(self, port: str, direction: str, name: str) -> None:
        body = {"action": "detach", "port": port, "dir": direction}
        self.bed.ok("PUT", f"{self.base}/components/{name}/ports", body)

    def _table(self, action: str, mac: str, port: str, vlan: int | None) -> None:
        body: dict[str, Any] = {"action": action, "type": "mac", "mac_address": mac, "port": port}
        if vlan is not None:
            body.update(type="vlan", vlan=vlan)
        self.bed.ok("PUT", f"{self.base}/classifier_table", body)

    def table_add(self, mac: str, port: str, vlan: int | None = None) -> None:
        """``classifier_table add mac MAC PORT`` (or ``... vlan VID MAC PORT`` with ``vlan``)."""
        self._table("add", mac, port, vlan)

    def table_del(self, mac: str, port: str, vlan: int | None = None) -> None:
        self._table("del", mac, port, vlan)

    def exit(self) -> None:
        self.bed.ok("DELETE", self.base)


class Testbed:
    __test__ = False  # not a pytest class, despite the name

    def __init__(
        self,
        ifaces: list[str] | None = None,
        nb_rings: int = 4,
        primary_lcores: str = "0",
        ring_size: int = 1024,
        api_port: int | None = None,
        pri_port: int | None = None,
        sec_port: int | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        prefix: str | None = None,
        extra_primary_args: list[str] | None = None,
        keep_logs: bool = False,
        primary_eal: list[str] | None = None,
        extra_ctl_args: list[str] | None = None,
    ) -> None:
        self.ifaces = ifaces or []
        self.nb_rings = nb_rings
        self.primary_lcores = primary_lcores
        self.ring_size = ring_size
        self.api_port = api_port or free_port()
        self.pri_port = pri_port or free_port()
        self.sec_port = sec_port or free_port()
        #: ports this bed chose itself, and may choose again if another listener took one first
        self._chosen_ports = {"api": api_port is None, "pri": pri_port is None, "sec": sec_port is None}
        # "<pid>x" marks what a test run made (tests/leakcheck.py looks for it)
        self.prefix = prefix or f"bed{os.getpid() % 100000}x{uuid.uuid4().hex[:4]}"
        #: Logs of every process of the bed. By default the primary's own per-prefix directory
        #: (where it puts launched secondaries' logs too), removed on close unless ``keep_logs``;
        #: a directory given by the caller is the caller's and stays.
        self.log_dir = Path(log_dir) if log_dir else instance_log_dir(self.prefix)
        self.keep_logs = keep_logs or log_dir is not None
        self._made_log_dir = False
        self.extra_primary_args = extra_primary_args or []
        self.primary_eal = primary_eal or []  # more EAL options, e.g. --vdev
        self.extra_ctl_args = extra_ctl_args or []  # e.g. --web
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        #: set once the spp-ctl answering on api_port is known to be the one this bed started;
        #: until then close() sends nothing to it
        self.owns_ctl = False
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=30)

    # -- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> Testbed:
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

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        if not self.log_dir.exists():
            self.log_dir.mkdir(parents=True)
            self._made_log_dir = True
        with open(self.log_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        self.start_ctl()
        self.start_primary()

    def start_ctl(self, attempts: int = 3) -> None:
        """Start spp-ctl on the bed's ports. When another listener takes one of the ports the bed
        chose itself between the choice and spp-ctl's bind, choose again (up to ``attempts``)."""
        for attempt in range(attempts):
            try:
                self._start_ctl_once()
                return
            except TestbedError as e:
                retry = "address already in use" in str(e) and attempt + 1 < attempts
                if not retry or not any(self._chosen_ports.values()):
                    raise
            self.procs.pop("spp-ctl").wait(5)
            self.api_port = free_port() if self._chosen_ports["api"] else self.api_port
            self.pri_port = free_port() if self._chosen_ports["pri"] else self.pri_port
            self.sec_port = free_port() if self._chosen_ports["sec"] else self.sec_port
            self.http.close()
            self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=30)

    def _start_ctl_once(self) -> None:
        taken = [p for p in (self.api_port, self.pri_port, self.sec_port) if port_in_use(p)]
        if taken:
            raise TestbedError(
                f"port {', '.join(map(str, taken))} on 127.0.0.1 is in use (another spp-ctl?): "
                "not starting a second one there; choose other ports"
            )
        self._spawn(
            "spp-ctl",
            [
                sys.executable,
                "-m",
                "spp.control.ctl.main",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.pri_port),
                "-s",
                str(self.sec_port),
                "-a",
                str(self.api_port),
                *self.extra_ctl_args,
            ],
        )
        wait_for(self._api_up, 15, "spp-ctl to listen")
        self.owns_ctl = True

    def _api_up(self) -> bool:
        ctl = self.procs["spp-ctl"]
        if ctl.poll() is not None:
            raise TestbedError(f"spp-ctl exited: {self.log('spp-ctl')[-2000:]}")
        # The REST listener is bound last: once it is ours, so are the wire ports. Until then an
        # answer on the port would come from someone else's spp-ctl, which must not be driven.
        if not listens_on(ctl.pid, self.api_port):
            return False
        try:
            return self.http.get("/v1/processes", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start_primary(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "spp.processes.primary",
            "-l",
            self.primary_lcores,
            "--file-prefix",
            self.prefix,
            *self.primary_eal,
            "--",
            "-n",
            str(self.nb_rings),
            "-s",
            f"127.0.0.1:{self.pri_port}",
            "--ring-size",
            str(self.ring_size),
        ]
        if self.log_dir != instance_log_dir(self.prefix):
            argv += ["--log-dir", str(self.log_dir)]  # else the primary's own default is the same
        for iface in self.ifaces:
            argv += ["--iface", iface]
        argv += self.extra_primary_args
        proc = self._spawn("spp-primary", argv)

        def primary_up() -> bool:
            if proc.poll() is not None:
                raise TestbedError(f"spp-primary exited: {self.log('spp-primary')[-2000:]}")
            return {"type": "primary"} in self.processes()

        wait_for(primary_up, 15, "the primary to register")

    def launch_nfv(
        self,
        client_id: int,
        lcores: str = "0,1",
        main_lcore: int | None = None,
        app: dict[str, str] | None = None,
    ) -> Secondary:
        """Start an nfv the SPP way: ``PUT /v1/primary/launch`` (the primary spawns it). Its worker
        runs on the lcore after the main one; give two nfvs different ones on a 2-core machine.
        ``app``: more application options (``{"--busy-poll-us": "20000"}``)."""
        eal: dict[str, Any] = {"-l": lcores, "--proc-type": "secondary", "--file-prefix": self.prefix}
        if main_lcore is not None:
            eal["--master-lcore"] = str(main_lcore)
        body = {
            "proc_name": "spp_nfv",
            "client_id": client_id,
            "eal": eal,
            "app": {"-n": str(client_id), "-s": f"127.0.0.1:{self.sec_port}", **(app or {})},
        }
        self.ok("PUT", "/v1/primary/launch", body)
        return self.nfv(client_id)

    def start_nfv(
        self,
        client_id: int,
        lcores: str = "0,1",
        main_lcore: int | None = None,
        extra: list[str] | None = None,
        eal_extra: list[str] | None = None,
    ) -> Secondary:
        """Start an nfv directly (as a script or spp-runner would) and wait for it to register.
        ``extra`` goes after ``--`` (application options), ``eal_extra`` before (``--vdev``...)."""
        eal = ["-l", lcores, "--file-prefix", self.prefix, *(eal_extra or [])]
        if main_lcore is not None:
            eal += ["--main-lcore", str(main_lcore)]
        proc = self._spawn(
            f"spp_nfv-{client_id}",
            [
                sys.executable,
                "-m",
                "spp.processes.nfv",
                *eal,
                "--",
                "-n",
                str(client_id),
                "-s",
                f"127.0.0.1:{self.sec_port}",
                *(extra or []),
            ],
        )

        def registered() -> bool:
            if proc.poll() is not None:
                raise TestbedError(f"spp_nfv {client_id} exited: {self.log(f'spp_nfv-{client_id}')[-2000:]}")
            return {"type": "nfv", "client-id": client_id} in self.processes()

        wait_for(registered, 15, f"nfv {client_id} to register")
        return self.nfv(client_id)

    def nfv(self, client_id: int) -> Secondary:
        return Secondary(self, "nfv", client_id)

    def _launch_worker(self, proc_name: str, client_id: int, lcores: str, main_lcore: int | None) -> None:
        eal = {"-l": lcores, "--proc-type": "secondary", "--file-prefix": self.prefix}
        if main_lcore is not None:
            eal["--master-lcore"] = str(main_lcore)
        app: dict[str, Any] = {"--client-id": str(client_id), "-s": f"127.0.0.1:{self.sec_port}"}
        body = {"proc_name": proc_name, "client_id": client_id, "eal": eal, "app": app}
        self.ok("PUT", "/v1/primary/launch", body)

    def launch_vf(self, client_id: int, lcores: str = "0,1", main_lcore: int | None = None) -> WorkerClient:
        """Start an spp_vf through the primary (``PUT /v1/primary/launch``). Its master is the
        lowest lcore (or ``main_lcore``); the others are worker lcores for components."""
        self._launch_worker("spp_vf", client_id, lcores, main_lcore)
        return self.vf(client_id)

    def launch_mirror(
        self, client_id: int, lcores: str = "0,1", main_lcore: int | None = None
    ) -> WorkerClient:
        """Start an spp_mirror through the primary, like :meth:`launch_vf`."""
        self._launch_worker("spp_mirror", client_id, lcores, main_lcore)
        return self.mirror(client_id)

    def start_worker(
        self,
        kind: str,
        client_id: int,
        lcores: str = "0,1",
        extra: list[str] | None = None,
        wait: bool = True,
    ) -> WorkerClient:
        """Start an spp_vf or spp_mirror (``kind`` "vf" or "mirror") directly, with extra app
        options (``--burst``), and wait for it to register (unless ``wait`` is false: then
        :meth:`wait_worker`, so that several start at once)."""
        name = f"spp_{kind}-{client_id}"
        argv = [sys.executable, "-m", f"spp.processes.{kind}", "-l", lcores, "--file-prefix", self.prefix]
        argv += ["--", "--client-id", str(client_id), "-s", f"127.0.0.1:{self.sec_port}", *(extra or [])]
        self._spawn(name, argv)
        if wait:
            self.wait_worker(kind, client_id)
        return WorkerClient(self, kind, client_id)

    def wait_worker(self, kind: str, client_id: int) -> None:
        """Until the worker :meth:`start_worker` started has registered (TestbedError if it
        exited)."""
        name = f"spp_{kind}-{client_id}"
        proc = self.procs[name]

        def registered() -> bool:
            if proc.poll() is not None:
                raise TestbedError(f"{name} exited: {self.log(name)[-2000:]}")
            return {"type": kind, "client-id": client_id} in self.processes()

        wait_for(registered, 15, f"{kind} {client_id} to register")

    def vf(self, client_id: int) -> WorkerClient:
        return WorkerClient(self, "vf", client_id)

    def mirror(self, client_id: int) -> WorkerClient:
        return WorkerClient(self, "mirror", client_id)

    def close(self) -> None:
        """Stop every process (secondaries first), by PID, and remove the shared segment and the
        log directory (unless kept)."""
        if self.owns_ctl:
            with contextlib.suppress(httpx.HTTPError):
                for entry in self.processes():
                    if entry["type"] in ("nfv", "vf", "mirror", "pcap"):
                        self.http.delete(f"/v1/{entry['type']}s/{entry['client-id']}", timeout=15)
            with contextlib.suppress(httpx.HTTPError):
                self.http.delete("/v1/primary", timeout=15)
            for pid in self.segment_pids():  # secondaries outlive a primary; a failed DELETE leaves one
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for name in sorted(self.procs, key=lambda n: n == "spp-ctl"):  # spp-ctl last
            proc = self.procs[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        self.http.close()
        self._remove_own_segment()
        if self._made_log_dir and not self.keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def _remove_own_segment(self) -> None:
        """Remove the segment if this bed's primary made it (a primary that crashed leaves it);
        one of another primary that happened to use the same prefix is not this bed's to touch."""
        primary = self.procs.get("spp-primary")
        if primary is None:
            return
        try:
            seg = Segment.attach(self.prefix)
        except SegmentError:
            return
        try:
            mine = seg.spec.primary_pid == primary.pid
        finally:
            seg.close()
        if mine:
            segment_path(self.prefix).unlink(missing_ok=True)

    def segment_pids(self) -> list[int]:
        """Processes the shared process table lists as alive (launched ones included), if the
        segment is this bed's (its primary made or took over it)."""
        primary = self.procs.get("spp-primary")
        try:
            seg = Segment.attach(self.prefix)
        except (SegmentError, OSError):
            return []
        try:
            if primary is None or seg.spec.primary_pid != primary.pid:
                return []
            return [pid for _, pid, _ in seg.live_processes()]
        finally:
            seg.close()

    # -- REST ----------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.http.request(method, path, json=body)

    def ok(self, method: str, path: str, body: Any = None) -> httpx.Response:
        r = self.request(method, path, body)
        if r.status_code >= 300:
            raise TestbedError(f"{method} {path} -> {r.status_code}: {r.text}")
        return r

    def processes(self) -> list[dict[str, Any]]:
        return self.http.get("/v1/processes", timeout=5).json()

    def primary_status(self) -> dict[str, Any]:
        return self.ok("GET", "/v1/primary/status").json()

    def ring_stats(self, ring: int) -> dict[str, int]:
        return self.primary_status()["ring_ports"][ring]

    def phy_stats(self, phy: int) -> dict[str, Any]:
        return self.primary_status()["phy_ports"][phy]

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}


# -- spp_pcap ------------------------------------------------------------------------------------


class PcapClient:
    """REST calls of one spp_pcap (``/v1/pcaps/N``), named like the CLI's ``pcap N; ...``."""

    def __init__(self, bed: Testbed, client_id: int) -> None:
        self.bed, self.id = bed, client_id
        self.base = f"/v1/pcaps/{client_id}"

    def status(self) -> dict[str, Any]:
        return self.bed.ok("GET", self.base).json()

    def start(self) -> None:
        self.bed.ok("PUT", f"{self.base}/capture", {"action": "start"})

    def stop(self) -> None:
        self.bed.ok("PUT", f"{self.base}/capture", {"action": "stop"})

    def exit(self) -> None:
        self.bed.ok("DELETE", self.base)


def launch_pcap(
    bed: Testbed,
    client_id: int,
    port: str,
    out_dir: str | os.PathLike[str],
    lcores: str = "0,1",
    fsize: int | None = None,
) -> PcapClient:
    """Start spp_pcap the SPP way, ``PUT /v1/primary/launch``; returns once it has registered.

    Only SPP's options pass through spp-ctl's launch (``-c``, ``--out-dir``, ``--fsize``); use
    :func:`start_pcap` for ``--format`` or ``--filter``.
    """
    app: dict[str, Any] = {
        "--client-id": str(client_id),
        "-s": f"127.0.0.1:{bed.sec_port}",
        "-c": port,
        "--out-dir": str(out_dir),
    }
    if fsize is not None:
        app["--fsize"] = str(fsize)
    body = {
        "proc_name": "spp_pcap",
        "client_id": client_id,
        "eal": {"-l": lcores, "--proc-type": "secondary", "--file-prefix": bed.prefix},
        "app": app,
    }
    bed.ok("PUT", "/v1/primary/launch", body)
    return PcapClient(bed, client_id)


def start_pcap(
    bed: Testbed,
    client_id: int,
    port: str,
    out_dir: str | os.PathLike[str],
    lcores: str = "0,1",
    extra: list[str] | None = None,
) -> PcapClient:
    """Start spp_pcap directly (as a script would), with any of its options, and wait until it
    has registered with spp-ctl. Its log is ``bed.log("spp_pcap-N")``."""
    name = f"spp_pcap-{client_id}"
    argv = [sys.executable, "-m", "spp.processes.pcap", "-l", lcores, "--file-prefix", bed.prefix, "--"]
    argv += ["--client-id", str(client_id), "-s", f"127.0.0.1:{bed.sec_port}", "-c", port]
    argv += ["--out-dir", str(out_dir), *(extra or [])]
    proc = bed._spawn(name, argv)

    def registered() -> bool:
        if proc.poll() is not None:
            raise TestbedError(f"spp_pcap {client_id} exited: {bed.log(name)[-2000:]}")
        return {"type": "pcap", "client-id": client_id} in bed.processes()

    wait_for(registered, 15, f"spp_pcap {client_id} to register")
    return PcapClient(bed, client_id)
