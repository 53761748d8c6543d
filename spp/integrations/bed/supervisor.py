"""The bed's supervisor: the one background process ``spp up`` leaves running.

It brings the bed up (namespaces, spp-ctl, primary, secondaries, their wiring, VMs, containers),
then watches every process: one that dies is restarted by its policy (``no``, ``on-failure``,
``always``; backing off 0.5 s, 1 s, 2 s... and giving up after 5 restarts in a minute), and a
restarted secondary gets its ports, patches and components again. It answers ``ps``, ``apply``
and ``down`` on its control socket (:mod:`spp.integrations.bed.state`), one request at a time.

``python -m spp.integrations.bed.supervisor STATE_DIR [--tmux]``; ``spp up`` starts it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from spp.integrations.bed import procs as P
from spp.integrations.bed.plan import ADD_NS, Step, plan, wiring
from spp.integrations.bed.schema import Bed, Container, Namespace, Secondary, Vm
from spp.integrations.bed.state import control_path, read_json, write_json
from spp.integrations.netns import VethHost
from spp.integrations.testbed import listens_on, port_in_use

log = logging.getLogger("spp-bed")

RESTART_WINDOW = 60.0
MAX_RESTARTS = 5
REGISTER_TIMEOUT = 20.0


class BedRunError(RuntimeError):
    """A step that could not be done; the message names it and says why."""


class Runner:
    def __init__(self, state_dir: Path, use_tmux: bool) -> None:
        self.dir = state_dir
        self.logs = state_dir / "logs"
        self.use_tmux = use_tmux
        self.tmux: P.Tmux | None = None
        self.bed: Bed | None = None
        self.procs: dict[str, P.Supervised] = {}
        self.namespaces: dict[str, VethHost] = {}
        self.vms: dict[int, Vm] = {}
        self.containers: dict[str, Container] = {}
        self.http: httpx.Client | None = None
        self.phase = "starting"
        self.error = ""

    # -- REST ------------------------------------------------------------------------------------

    def client(self, bed: Bed) -> httpx.Client:
        if self.http is None:
            self.http = httpx.Client(base_url=f"http://{bed.ctl.host}:{bed.ctl.api_port}", timeout=30)
        return self.http

    def rest(self, bed: Bed, method: str, path: str, body: Any = None) -> httpx.Response:
        r = self.client(bed).request(method, path, json=body)
        if r.status_code >= 300:
            raise BedRunError(f"{method} {path} -> {r.status_code}: {r.text.strip()}")
        return r

    def registered(self, bed: Bed, entry: dict[str, Any]) -> bool:
        try:
            return entry in self.client(bed).get("/v1/processes", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False

    # -- processes ---------------------------------------------------------------------------------

    def new_proc(self, name: str, argv: list[str], policy: str) -> P.Supervised:
        proc = P.Supervised(name, argv, self.logs / f"{P.log_name(name)}.log", policy, self.tmux)
        self.procs[name] = proc
        return proc

    def wait_up(self, proc: P.Supervised, ready: Any, what: str, timeout: float = REGISTER_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not proc.alive():
                raise BedRunError(
                    f"{proc.name} exited while starting; its log ({proc.log}):\n{proc.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BedRunError(f"{proc.name} did not {what} within {timeout:.0f} s; see {proc.log}")
            time.sleep(0.05)

    def start_ctl(self, bed: Bed) -> None:
        c = bed.ctl
        taken = [p for p in (c.api_port, c.pri_port, c.sec_port) if port_in_use(p, c.host)]
        if taken:
            raise BedRunError(
                f"port {', '.join(map(str, taken))} on {c.host} is in use (another spp-ctl?): "
                "set other ports under 'ctl:' in the bed file"
            )
        proc = self.new_proc("spp-ctl", P.ctl_argv(bed), bed.restart)
        proc.start()
        self.wait_ctl(bed, proc)

    def wait_ctl(self, bed: Bed, proc: P.Supervised) -> None:
        def up() -> bool:
            if not listens_on(proc.pid or 0, bed.ctl.api_port):
                return False
            with contextlib.suppress(httpx.HTTPError):
                return self.client(bed).get("/v1/processes", timeout=1).status_code == 200
            return False

        self.wait_up(proc, up, "answer on its REST port")

    def start_primary(self, bed: Bed) -> None:
        proc = self.new_proc("primary", P.primary_argv(bed, self.logs), bed.restart)
        proc.start()
        self.wait_up(proc, lambda: self.registered(bed, {"type": "primary"}), "register with spp-ctl")

    def secondary(self, bed: Bed, name: str) -> Secondary:
        return next(s for s in bed.secondaries if s.name == name)

    def start_secondary(self, bed: Bed, sec: Secondary) -> None:
        proc = self.new_proc(sec.name, P.secondary_argv(bed, sec), sec.restart or bed.restart)
        proc.start()
        self.wait_secondary(bed, sec, proc)

    def wait_secondary(self, bed: Bed, sec: Secondary, proc: P.Supervised) -> None:
        entry = {"type": sec.kind, "client-id": sec.id}
        self.wait_up(proc, lambda: self.registered(bed, entry), "register with spp-ctl")

    def stop_secondary(self, bed: Bed, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        proc.wanted = False
        kind, sec_id = name.split()
        if proc.alive():
            with contextlib.suppress(httpx.HTTPError, BedRunError):
                self.client(bed).delete(f"/v1/{kind}s/{sec_id}", timeout=15)
        proc.stop()

    def stop_core(self, bed: Bed, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        proc.wanted = False
        if name == "primary" and proc.alive():
            with contextlib.suppress(httpx.HTTPError):
                self.client(bed).delete("/v1/primary", timeout=15)
        proc.stop()
        if name == "spp-ctl" and self.http is not None:
            self.http.close()
            self.http = None

    # -- VMs and containers ------------------------------------------------------------------------

    def start_vm(self, bed: Bed, vm: Vm) -> None:
        from spp.integrations.bed import guests

        guests.start_vm(bed, vm)
        self.vms[vm.id] = vm

    def stop_vm(self, bed: Bed, vm: Vm) -> None:
        from spp.integrations.bed import guests

        self.vms.pop(vm.id, None)
        guests.stop_vm(bed, vm)

    def start_container(self, bed: Bed, c: Container) -> None:
        from spp.integrations.bed import guests

        guests.start_container(bed, c, self.logs)
        self.containers[c.name] = c

    def stop_container(self, bed: Bed, c: Container) -> None:
        from spp.integrations.bed import guests

        self.containers.pop(c.name, None)
        guests.stop_container(bed, c)

    # -- steps -------------------------------------------------------------------------------------

    def execute(self, step: Step, old: Bed | None, new: Bed | None) -> None:
        bed = new if step.phase >= ADD_NS and new is not None else (old or new)  # removals use the old bed
        assert bed is not None
        op, args = step.op, step.args
        if op == "rest":
            self.rest(bed, *args)
        elif op == "start-ctl":
            self.start_ctl(bed)
        elif op == "start-primary":
            self.start_primary(bed)
        elif op == "start-secondary":
            self.start_secondary(bed, self.secondary(bed, args[0]))
        elif op == "stop-secondary":
            self.stop_secondary(bed, args[0])
        elif op == "stop-primary":
            self.stop_core(bed, "primary")
        elif op == "stop-ctl":
            self.stop_core(bed, "spp-ctl")
        elif op == "ns-add":
            ns: Namespace = args[0]
            host = VethHost(ns=ns.name, outer=ns.outer, inner=ns.inner, address=ns.address, mac=ns.mac)
            try:
                host.create()
            except FileExistsError as e:
                raise BedRunError(str(e)) from None
            self.namespaces[ns.name] = host
        elif op == "ns-del":
            host = self.namespaces.pop(args[0].name, None)
            if host is not None:
                host.destroy()
        elif op == "vm-start":
            self.start_vm(bed, args[0])
        elif op == "vm-stop":
            self.stop_vm(bed, args[0])
        elif op == "container-start":
            self.start_container(bed, args[0])
        elif op == "container-stop":
            self.stop_container(bed, args[0])
        elif op != "note":
            raise BedRunError(f"unknown step {op}")

    def apply(self, new: Bed | None, dry_run: bool = False, best_effort: bool = False) -> list[str]:
        """Move the bed to ``new`` (None: down). Returns what was done, step by step."""
        old = self.bed
        steps = plan(old, new)
        if dry_run:
            return [s.text for s in steps]
        self.pending = new or old
        done: list[str] = []
        for step in steps:
            if step.op != "note":
                log.info("step: %s", step.text)
            try:
                self.execute(step, old, new)
            except Exception as e:
                if not best_effort:
                    raise BedRunError(f"{step.text}: {e}") from None
                log.warning("step failed (going on): %s: %s", step.text, e)
            done.append(step.text)
            self.write_status()
        self.bed = new
        if new is not None:
            write_json(self.dir / "bed.json", new.model_dump(mode="json"))
        return done

    def teardown(self) -> list[str]:
        """Everything down, in reverse order; then a sweep of whatever a failed step left."""
        done = self.apply(None, best_effort=True) if self.bed is not None else []
        bed = self.bed or self.pending
        for c in list(self.containers.values()):
            with contextlib.suppress(Exception):
                self.stop_container(bed, c)
        for vm in list(self.vms.values()):
            with contextlib.suppress(Exception):
                self.stop_vm(bed, vm)
        for name in reversed(list(self.procs)):
            proc = self.procs.pop(name)
            proc.stop()
        for host in reversed(list(self.namespaces.values())):
            host.destroy()
        self.namespaces.clear()
        if self.tmux is not None:
            self.tmux.destroy()
        if self.http is not None:
            self.http.close()
            self.http = None
        self.bed = None
        return done

    # -- watching ----------------------------------------------------------------------------------

    def watch(self) -> None:
        """One round: note deaths, restart what is due."""
        now = time.monotonic()
        for proc in list(self.procs.values()):
            if not proc.wanted or proc.gave_up:
                continue
            if proc.next_start is None:
                if proc.alive():
                    continue
                self.died(proc, now)
            elif now >= proc.next_start:
                self.restart(proc)

    def died(self, proc: P.Supervised, now: float) -> None:
        status = proc.exit_status
        log.warning(
            "%s (pid %s) exited%s",
            proc.name,
            proc.pid,
            f" with status {status}" if status is not None else "",
        )
        if proc.policy == "no" or (proc.policy == "on-failure" and status == 0):
            proc.gave_up = True
        else:
            proc.restart_times = [t for t in proc.restart_times if now - t < RESTART_WINDOW]
            if len(proc.restart_times) >= MAX_RESTARTS:
                log.error("%s: %d restarts within %.0f s, giving up", proc.name, MAX_RESTARTS, RESTART_WINDOW)
                proc.gave_up = True
            else:
                proc.next_start = now + 0.5 * 2 ** len(proc.restart_times)
        self.write_status()

    def restart(self, proc: P.Supervised) -> None:
        bed = self.bed
        assert bed is not None
        proc.restart_times.append(time.monotonic())
        proc.restarts += 1
        log.info("restarting %s (restart %d)", proc.name, proc.restarts)
        try:
            proc.start()
            if proc.name == "spp-ctl":
                self.wait_ctl(bed, proc)
            elif proc.name == "primary":
                self.wait_up(proc, lambda: self.registered(bed, {"type": "primary"}), "register with spp-ctl")
            else:
                sec = self.secondary(bed, proc.name)
                self.wait_secondary(bed, sec, proc)
                for step in wiring(None, sec):
                    self.execute(step, bed, bed)
        except Exception as e:  # the supervisor must outlive any one restart
            log.error("restarting %s: %s", proc.name, e)
        self.write_status()

    # -- status ------------------------------------------------------------------------------------

    def state_of(self, proc: P.Supervised, live: bool) -> str:
        if proc.next_start is not None:
            return "restarting"
        if not proc.alive():
            return "exited"
        if not live or self.bed is None or proc.name in ("spp-ctl", "primary"):
            return "running"
        kind, sec_id = proc.name.split()
        try:
            st = self.client(self.bed).get(f"/v1/{kind}s/{sec_id}", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return "running"
        if kind in ("vf", "mirror"):
            busy = [c for c in st.get("components", []) if c.get("type") not in (None, "unuse")]
            return "running" if busy else "idling"
        return "idling" if str(st.get("status", "")).startswith("idl") else "running"

    def rows(self, live: bool = False) -> list[dict[str, Any]]:
        out = []
        now = time.time()
        for proc in self.procs.values():
            state = self.state_of(proc, live)
            out.append(
                {
                    "name": proc.name,
                    "pid": proc.pid if state != "exited" else None,
                    "state": state,
                    "restarts": proc.restarts,
                    "uptime_s": round(now - proc.started, 1) if state in ("running", "idling") else None,
                    "log": str(proc.log),
                    "window": proc.window,
                    "argv": proc.argv,
                }
            )
        from spp.integrations.bed import guests

        bed = self.bed
        for vm in self.vms.values():
            out.append(guests.vm_row(bed, vm) if bed else {"name": f"vm {vm.id}", "state": "exited"})
        for c in self.containers.values():
            out.append(
                guests.container_row(bed, c) if bed else {"name": f"container {c.name}", "state": "exited"}
            )
        return out

    def write_status(self) -> None:
        bed = self.bed or self.pending
        write_json(
            self.dir / "status.json",
            {
                "phase": self.phase,
                "error": self.error,
                "name": bed.name if bed else None,
                "supervisor": os.getpid(),
                "tmux": self.tmux.session if self.tmux else None,
                "namespaces": list(self.namespaces),
                "processes": self.rows(live=False),
            },
        )

    pending: Bed | None = None


def _serve(runner: Runner, conn: socket.socket) -> bool:
    """Answer one request; True when the supervisor should exit (after ``down``)."""
    conn.settimeout(10)
    data = b""
    with contextlib.suppress(OSError):
        while not data.endswith(b"\n") and len(data) < 1 << 20:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any]
    stop = False
    try:
        req = json.loads(data)
        op = req.get("op")
        if op == "ps":
            reply = {
                "ok": True,
                "name": runner.bed.name if runner.bed else None,
                "processes": runner.rows(live=True),
            }
        elif op == "apply":
            new = Bed.model_validate(req["bed"])
            steps = runner.apply(new, dry_run=bool(req.get("dry_run")))
            reply = {"ok": True, "steps": steps}
        elif op == "down":
            runner.phase = "stopping"
            runner.write_status()
            reply = {"ok": True, "steps": runner.teardown()}
            stop = True
        else:
            reply = {"ok": False, "error": f"unknown request {op!r}"}
    except Exception as e:  # a bad request or a failed step is answered, never the supervisor's end
        reply = {"ok": False, "error": str(e)}
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(reply).encode() + b"\n")
    conn.close()
    return stop


def run(state_dir: Path, use_tmux: bool) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    runner = Runner(state_dir, use_tmux)
    bed = Bed.model_validate(json.loads((state_dir / "bed.json").read_text()))
    runner.pending = bed
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control_path(state_dir).unlink(missing_ok=True)
    listener.bind(str(control_path(state_dir)))
    listener.listen(8)
    try:
        if use_tmux:
            runner.tmux = P.Tmux(f"spp-{bed.name}", state_dir)
            runner.tmux.create()
        runner.write_status()
        runner.apply(bed)
        runner.phase = "up"
        runner.write_status()
    except Exception as e:
        log.error("bringing the bed up failed: %s", e)
        runner.error = str(e)
        runner.teardown()
        runner.phase = "failed"
        runner.write_status()
        listener.close()
        return 1
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    done = False
    while not done and not stopping:
        for _key, _ in sel.select(timeout=0.5):
            conn, _ = listener.accept()
            done = _serve(runner, conn)
        if not done and not stopping:
            runner.watch()
    if stopping:
        runner.phase = "stopping"
        runner.write_status()
        runner.teardown()
    listener.close()
    shutil.rmtree(state_dir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="spp-bed-supervisor", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    ap.add_argument("state_dir", type=Path)
    ap.add_argument("--tmux", action="store_true")
    args = ap.parse_args(argv)
    return run(args.state_dir, args.tmux)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["BedRunError", "Runner", "main", "read_json"]
