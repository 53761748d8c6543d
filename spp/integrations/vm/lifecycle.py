"""``spp vm ctl ACTION [TARGET] -f FILE``: Snabb's ``lwaftrctl`` for SPP (switch, VM, app in the VM).

Three targets, started in this order and stopped in the reverse one:

* **switch**: spp-ctl, the primary and one nfv, each under ``taskset -c`` on its cores, then the
  nfv's ``vhost:N`` ports, patches and ``forward`` (the role of lwaftrctl's snabbnfv);
* **vm**: the guest of ``spp vm`` on those vhost ports; QEMU's threads are pinned to the
  ``pin`` cores at once, and each vCPU thread (from the monitor's ``info cpus``) to one of them;
* **app**: a command started in the guest in the background (its pid kept in the guest), stopped
  with ``kill`` or the file's ``stop`` command.

ACTION is ``start``, ``stop``, ``restart`` or ``status``; TARGET is ``all`` (default), ``switch``,
``vm`` or ``app``; lwaftrctl's older word order (``TARGET ACTION``) is accepted too. The file::

    file_prefix: lw1                      # the instance (default $SPP_FILE_PREFIX or spp)
    ctl: {api_port: 7777, pri_port: 5555, sec_port: 6666}
    switch:
      primary: {lcores: "0", pin: [0], rings: 1}
      nfv: {id: 1, lcores: "0,1", pin: [1]}
      vhost_dir: /tmp                     # where the sockN files go
      ports: [vhost:1, vhost:2]
      patches: [[vhost:1, vhost:2], [vhost:2, vhost:1]]
    vm: {id: 1, dev_ids: [1, 2], ips: [10.0.0.1/24, 10.0.1.1/24], mem: 256, cores: 1, pin: [1]}
    app: {start: "ping -c 100 10.0.0.9", stop: ""}

What the switch runs is recorded in ``/tmp/spp-<prefix>/lifecycle/switch.json`` (pids with their
start times, so a recycled pid is never signalled) with one log per process beside it; the VM's
files are ``spp vm``'s own. ``stop`` of something not running is not an error; ``start`` of
something running is (stop it or restart). The Python API is :class:`Lifecycle`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from spp.integrations.vm import manager
from spp.integrations.vm.manager import VmError
from spp.integrations.vm.qemu import (
    DEFAULT_ON_PANIC,
    PANIC_ACTIONS,
    Nic,
    VmSpec,
    default_mac,
    resolve_accel,
    vhost_socket,
)

TARGETS = ("switch", "vm", "app")
ACTIONS = ("start", "stop", "restart", "status")
APP_PID = "/tmp/spp-app.pid"
APP_LOG = "/tmp/spp-app.log"


class LifecycleError(RuntimeError):
    """A step that cannot be done; the message names the target and why."""


@dataclass
class SwitchConfig:
    primary_lcores: str = "0"
    rings: int = 1
    primary_pin: list[int] = field(default_factory=list)
    nfv_id: int = 1
    nfv_lcores: str = "0,1"
    nfv_pin: list[int] = field(default_factory=list)
    vhost_dir: str = "/tmp"
    ports: list[str] = field(default_factory=list)
    patches: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class VmConfig:
    vm_id: int = 1
    dev_ids: list[int] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    mem: int = 256
    cores: int = 1
    pin: list[int] = field(default_factory=list)
    accel: str = "auto"
    image: str | None = None
    boot_timeout: float = 180.0
    reboot: bool = True  # false: a reboot in the guest ends QEMU (spp vm start --no-reboot)
    on_panic: str = DEFAULT_ON_PANIC  # spp vm start --on-panic


@dataclass
class AppConfig:
    start: str = ""
    stop: str = ""


@dataclass
class Config:
    file_prefix: str = "spp"
    api_port: int = 7777
    pri_port: int = 5555
    sec_port: int = 6666
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    vm: VmConfig | None = None
    app: AppConfig | None = None


def _cores(value: Any, where: str) -> list[int]:
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        cores = [int(c) for c in items]
    except (TypeError, ValueError):
        raise LifecycleError(f"{where}: cores must be numbers, e.g. [1, 2]") from None
    if any(c < 0 for c in cores):
        raise LifecycleError(f"{where}: negative core")
    return cores


def _section(data: dict[str, Any], key: str, known: set[str]) -> dict[str, Any]:
    sec = data.get(key) or {}
    if not isinstance(sec, dict):
        raise LifecycleError(f"{key}: expected a mapping")
    unknown = set(sec) - known
    if unknown:
        raise LifecycleError(f"{key}: unknown key(s) {', '.join(sorted(unknown))}")
    return sec


def load_config(path: Path) -> Config:
    """Read and check a lifecycle file (YAML, safe loader); errors name the key."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise LifecycleError(f"{path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise LifecycleError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise LifecycleError(f"{path}: expected a mapping at the top")
    unknown = set(data) - {"file_prefix", "ctl", "switch", "vm", "app"}
    if unknown:
        raise LifecycleError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    cfg = Config(file_prefix=str(data.get("file_prefix") or os.environ.get("SPP_FILE_PREFIX") or "spp"))
    ctl = _section(data, "ctl", {"api_port", "pri_port", "sec_port"})
    cfg.api_port = int(ctl.get("api_port", 7777))
    cfg.pri_port = int(ctl.get("pri_port", 5555))
    cfg.sec_port = int(ctl.get("sec_port", 6666))
    sw = _section(data, "switch", {"primary", "nfv", "vhost_dir", "ports", "patches"})
    pri = sw.get("primary") or {}
    nfv = sw.get("nfv") or {}
    patches = []
    for p in sw.get("patches") or []:
        if not (isinstance(p, list) and len(p) == 2):
            raise LifecycleError(f"switch.patches: {p!r} is not [SRC, DST]")
        patches.append((str(p[0]), str(p[1])))
    cfg.switch = SwitchConfig(
        primary_lcores=str(pri.get("lcores", "0")),
        rings=int(pri.get("rings", 1)),
        primary_pin=_cores(pri.get("pin"), "switch.primary.pin"),
        nfv_id=int(nfv.get("id", 1)),
        nfv_lcores=str(nfv.get("lcores", "0,1")),
        nfv_pin=_cores(nfv.get("pin"), "switch.nfv.pin"),
        vhost_dir=str(sw.get("vhost_dir", "/tmp")),
        ports=[str(p) for p in sw.get("ports") or []],
        patches=patches,
    )
    if "vm" in data:
        vm = _section(
            data,
            "vm",
            {
                "id",
                "dev_ids",
                "ips",
                "mem",
                "cores",
                "pin",
                "accel",
                "image",
                "boot_timeout",
                "reboot",
                "on_panic",
            },
        )
        if not isinstance(vm.get("reboot", True), bool):
            raise LifecycleError(f"vm.reboot: expected true or false, not {vm['reboot']!r}")
        if vm.get("on_panic", DEFAULT_ON_PANIC) not in PANIC_ACTIONS:
            raise LifecycleError(
                f"vm.on_panic: expected one of {', '.join(PANIC_ACTIONS)}, not {vm['on_panic']!r}"
            )
        cfg.vm = VmConfig(
            vm_id=int(vm.get("id", 1)),
            dev_ids=[int(d) for d in vm.get("dev_ids") or []],
            ips=[str(a) for a in vm.get("ips") or []],
            mem=int(vm.get("mem", 256)),
            cores=int(vm.get("cores", 1)),
            pin=_cores(vm.get("pin"), "vm.pin"),
            accel=str(vm.get("accel", "auto")),
            image=vm.get("image"),
            boot_timeout=float(vm.get("boot_timeout", 180)),
            reboot=vm.get("reboot", True),
            on_panic=vm.get("on_panic", DEFAULT_ON_PANIC),
        )
    if "app" in data:
        app = _section(data, "app", {"start", "stop"})
        if not app.get("start"):
            raise LifecycleError("app.start: the command to run in the guest is missing")
        cfg.app = AppConfig(str(app["start"]), str(app.get("stop") or ""))
    return cfg


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else int(fields[19])


def pin_threads(pid: int, cores: list[int]) -> int:
    """Pin every thread of ``pid`` to ``cores`` (``taskset -a -p``); returns how many."""
    done: set[int] = set()
    for _ in range(3):  # threads born meanwhile inherit the pinned main thread's set
        for task in Path(f"/proc/{pid}/task").iterdir():
            tid = int(task.name)
            if tid not in done:
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(tid, cores)
                    done.add(tid)
    return len(done)


def vcpu_threads(monitor: Path) -> list[int]:
    """Thread ids of the vCPUs, from the HMP monitor's ``info cpus``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(monitor))
        buf = b""
        s.sendall(b"info cpus\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and buf.count(b"(qemu)") < 2:
            with contextlib.suppress(TimeoutError):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
    return [int(t) for t in re.findall(rb"thread_id=(\d+)", buf)]


class Lifecycle:
    """Start, stop and restart the switch, the VM and the app in the VM, in order.

    ``Lifecycle(load_config(path)).start("all")``; every method takes a target (``all``,
    ``switch``, ``vm``, ``app``) and prints what it does to ``out``."""

    def __init__(self, cfg: Config, out: Any = sys.stdout) -> None:
        self.cfg = cfg
        self.out = out
        self.state_dir = Path("/tmp") / f"spp-{cfg.file_prefix}" / "lifecycle"
        self.vm_root = manager.default_state_root(cfg.file_prefix)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{cfg.api_port}", timeout=15)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _targets(self, target: str) -> list[str]:
        if target == "all":
            return [t for t in TARGETS if t == "switch" or getattr(self.cfg, t) is not None]
        if target not in TARGETS:
            raise LifecycleError(f"unknown target '{target}' (all, {', '.join(TARGETS)})")
        if target != "switch" and getattr(self.cfg, target) is None:
            raise LifecycleError(f"the file has no '{target}' section")
        return [target]

    def start(self, target: str = "all") -> None:
        for t in self._targets(target):
            getattr(self, f"start_{t}")()

    def stop(self, target: str = "all") -> None:
        for t in reversed(self._targets(target)):
            getattr(self, f"stop_{t}")()

    def restart(self, target: str = "all") -> None:
        self.stop(target)
        self.start(target)

    def status(self, target: str = "all") -> dict[str, str]:
        return {t: getattr(self, f"{t}_state")() for t in self._targets(target)}

    # -- switch --------------------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        try:
            return json.loads((self.state_dir / "switch.json").read_text())
        except (OSError, ValueError):
            return {}

    def _alive(self, entry: dict[str, Any]) -> bool:
        return _start_time(entry["pid"]) == entry["start"]

    def switch_state(self) -> str:
        rec = self._record()
        if not rec:
            return "stopped"
        alive = [name for name, e in rec.items() if self._alive(e)]
        return "running" if len(alive) == len(rec) else ("partly running" if alive else "stopped")

    def _spawn(self, name: str, argv: list[str], pin: list[int]) -> dict[str, int]:
        if pin:
            argv = ["taskset", "-c", ",".join(map(str, pin)), *argv]
        with open(self.state_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        start = None
        for _ in range(100):
            start = _start_time(proc.pid)
            if start is not None:
                break
            time.sleep(0.01)
        return {"pid": proc.pid, "start": start or 0}

    def _wait(self, what: str, check: Any, procs: dict[str, dict[str, int]], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if check():
                    return
            dead = [n for n, e in procs.items() if not self._alive(e)]
            if dead:
                log = (self.state_dir / f"{dead[0]}.log").read_text(errors="replace")[-800:]
                raise LifecycleError(f"switch: {dead[0]} exited: {log}")
            time.sleep(0.1)
        raise LifecycleError(f"switch: timed out waiting for {what}")

    def start_switch(self) -> None:
        cfg, sw = self.cfg, self.cfg.switch
        if self.switch_state() != "stopped":
            raise LifecycleError("switch: already running (stop or restart it)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        py = [sys.executable, "-m"]
        procs: dict[str, dict[str, int]] = {}
        try:
            procs["spp-ctl"] = self._spawn(
                "spp-ctl",
                [*py, "spp.control.ctl.main", "-b", "127.0.0.1", "-p", str(cfg.pri_port),
                 "-s", str(cfg.sec_port), "-a", str(cfg.api_port)],
                sw.primary_pin,
            )  # fmt: skip
            self._save(procs)
            self._wait("spp-ctl", lambda: self.http.get("/v1/processes").status_code == 200, procs)
            procs["primary"] = self._spawn(
                "primary",
                [*py, "spp.processes.primary", "-l", sw.primary_lcores, "--file-prefix", cfg.file_prefix,
                 "--", "-n", str(sw.rings), "-s", f"127.0.0.1:{cfg.pri_port}"],
                sw.primary_pin,
            )  # fmt: skip
            self._save(procs)
            self._wait(
                "the primary", lambda: {"type": "primary"} in self.http.get("/v1/processes").json(), procs
            )
            nfv_argv = [*py, "spp.processes.nfv", "-l", sw.nfv_lcores, "--file-prefix", cfg.file_prefix,
                        "--", "-n", str(sw.nfv_id), "-s", f"127.0.0.1:{cfg.sec_port}"]  # fmt: skip
            if sw.vhost_dir != "/tmp":
                nfv_argv += ["--vhost-dir", sw.vhost_dir]
            procs[f"nfv-{sw.nfv_id}"] = self._spawn(f"nfv-{sw.nfv_id}", nfv_argv, sw.nfv_pin)
            self._save(procs)
            me = {"type": "nfv", "client-id": sw.nfv_id}
            self._wait(f"nfv {sw.nfv_id}", lambda: me in self.http.get("/v1/processes").json(), procs)
            base = f"/v1/nfvs/{sw.nfv_id}"
            for port in sw.ports:
                self._ok("PUT", f"{base}/ports", {"action": "add", "port": port})
            for src, dst in sw.patches:
                self._ok("PUT", f"{base}/patches", {"src": src, "dst": dst})
            if sw.patches:
                self._ok("PUT", f"{base}/forward", {"action": "start"})
        except BaseException:
            self.stop_switch()
            raise
        pins = f"primary on {sw.primary_pin or 'any'}, nfv {sw.nfv_id} on {sw.nfv_pin or 'any'}"
        self.say(f"switch: started ({pins}); ports {', '.join(sw.ports) or 'none'}")

    def _ok(self, method: str, url: str, body: dict[str, Any]) -> None:
        r = self.http.request(method, url, json=body)
        if r.status_code >= 300:
            raise LifecycleError(f"switch: {method} {url} {body}: {r.status_code} {r.text.strip()}")

    def _save(self, procs: dict[str, dict[str, int]]) -> None:
        (self.state_dir / "switch.json").write_text(json.dumps(procs, indent=2) + "\n")

    def stop_switch(self) -> None:
        rec = self._record()
        if not rec:
            self.say("switch: not running")
            return
        # Politely first (the processes leave their segment rows), then by signal.
        for name in reversed(list(rec)):
            if name.startswith("nfv-"):
                with contextlib.suppress(httpx.HTTPError):
                    self.http.delete(f"/v1/nfvs/{name.removeprefix('nfv-')}", timeout=12)
            elif name == "primary":
                with contextlib.suppress(httpx.HTTPError):
                    self.http.delete("/v1/primary", timeout=12)
        for name in reversed(list(rec)):
            entry = rec[name]
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not self._alive(entry):
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(entry["pid"], sig)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and self._alive(entry):
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(entry["pid"], os.WNOHANG)
                    time.sleep(0.05)
        for path in self.state_dir.glob("*"):
            path.unlink()
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()
            self.state_dir.parent.rmdir()
        self.say("switch: stopped")

    # -- vm ------------------------------------------------------------------------------------

    def vm_spec(self) -> VmSpec:
        vm = self.cfg.vm
        assert vm is not None
        if len(vm.ips) > len(vm.dev_ids):
            raise LifecycleError(f"vm: {len(vm.dev_ids)} NIC(s) but {len(vm.ips)} ips")
        nics = [
            Nic(
                d,
                vhost_socket(d, self.cfg.switch.vhost_dir),
                default_mac(vm.vm_id, d),
                (vm.ips + [None] * 99)[i],
            )
            for i, d in enumerate(vm.dev_ids)
        ]
        from spp.integrations.vm.image import default_image_dir

        image = Path(vm.image) if vm.image else default_image_dir()
        return VmSpec(
            vm_id=vm.vm_id,
            state_dir=manager.vm_dir(self.vm_root, vm.vm_id),
            nics=nics,
            mem_mb=vm.mem,
            cores=vm.cores,
            accel=resolve_accel(vm.accel),
            kernel=image / "vmlinuz",
            initrd=image / "initrd.img",
            reboot=vm.reboot,
            on_panic=vm.on_panic,
        )

    def vm_state(self) -> str:
        vm = self.cfg.vm
        assert vm is not None
        return "running" if manager.read_pid(manager.vm_dir(self.vm_root, vm.vm_id)) else "stopped"

    def start_vm(self) -> None:
        vm = self.cfg.vm
        assert vm is not None
        if self.vm_state() == "running":
            raise LifecycleError(f"vm: VM {vm.vm_id} is already running (stop or restart it)")
        spec = self.vm_spec()
        try:
            pid = manager.start(spec)
        except VmError as e:
            raise LifecycleError(f"vm: {e}") from None
        try:
            if vm.pin:
                pin_threads(pid, vm.pin)
            manager.exec_in(self.vm_root, vm.vm_id, "true", boot_timeout=vm.boot_timeout)
            where = ""
            if vm.pin:
                tids = vcpu_threads(spec.monitor_socket)
                for i, tid in enumerate(tids):
                    os.sched_setaffinity(tid, [vm.pin[i % len(vm.pin)]])
                where = f", QEMU on cores {vm.pin}, vCPU threads {tids}"
        except (VmError, OSError) as e:
            log = spec.state_dir / "qemu.log"
            tail = log.read_text(errors="replace").strip()[-600:] if log.exists() else ""
            with contextlib.suppress(VmError):
                manager.stop(self.vm_root, vm.vm_id)
            raise LifecycleError(f"vm: {e}" + (f"; QEMU said: {tail}" if tail else "")) from None
        self.say(f"vm: VM {vm.vm_id} started (QEMU pid {pid}, {spec.accel}{where}); guest ready")

    def stop_vm(self) -> None:
        vm = self.cfg.vm
        assert vm is not None
        try:
            was = manager.stop(self.vm_root, vm.vm_id)
        except VmError:
            was = False
        self.say(f"vm: VM {vm.vm_id} {'stopped' if was else 'not running'}")

    # -- app -----------------------------------------------------------------------------------

    def _guest(self, command: str, timeout: float = 30) -> manager.ExecResult:
        vm = self.cfg.vm
        if vm is None or self.vm_state() != "running":
            raise LifecycleError("app: the VM is not running (start the vm first)")
        try:
            return manager.exec_in(
                self.vm_root, vm.vm_id, command, timeout=timeout, boot_timeout=vm.boot_timeout
            )
        except VmError as e:
            raise LifecycleError(f"app: {e}") from None

    def app_state(self) -> str:
        if self.cfg.vm is None or self.vm_state() != "running":
            return "stopped"
        r = self._guest(f'[ -f {APP_PID} ] && kill -0 "$(cat {APP_PID})" 2>/dev/null')
        return "running" if r.status == 0 else "stopped"

    def start_app(self) -> None:
        app = self.cfg.app
        assert app is not None
        if self.app_state() == "running":
            raise LifecycleError("app: already running (stop or restart it)")
        inner = shlex.quote(app.start)
        r = self._guest(f"sh -c {inner} > {APP_LOG} 2>&1 < /dev/null & echo $! > {APP_PID}; cat {APP_PID}")
        if r.status != 0:
            raise LifecycleError(f"app: could not start: {r.output.strip()}")
        self.say(f"app: started in the guest (pid {r.output.strip()}, log {APP_LOG})")

    def stop_app(self) -> None:
        app = self.cfg.app
        assert app is not None
        if self.app_state() != "running":
            self.say("app: not running")
            return
        if app.stop:
            self._guest(app.stop)
        self._guest(f'kill "$(cat {APP_PID})" 2>/dev/null; rm -f {APP_PID}')
        self.say("app: stopped")

    def app_log(self) -> str:
        return self._guest(f"cat {APP_LOG} 2>/dev/null").output


def parse_words(words: list[str]) -> tuple[str, str]:
    """``ACTION [TARGET]`` or lwaftrctl's first form ``TARGET ACTION``."""
    if not words or len(words) > 2:
        raise LifecycleError("expected ACTION [TARGET]: start|stop|restart|status [all|switch|vm|app]")
    if words[0] in ACTIONS:
        return words[0], words[1] if len(words) == 2 else "all"
    if len(words) == 2 and words[1] in ACTIONS:
        return words[1], words[0]
    raise LifecycleError(f"unknown action in '{' '.join(words)}' (start, stop, restart, status)")


def run(path: Path, words: list[str]) -> int:
    action, target = parse_words(words)
    lc = Lifecycle(load_config(path))
    if action == "status":
        for t, st in lc.status(target).items():
            print(f"{t}: {st}")
        return 0
    getattr(lc, action)(target)
    return 0
