"""``spp up | apply | down | ps | validate``: a whole bed from one YAML file.

::

    spp validate FILE...          check files (schema, references), start nothing
    spp up [--dry-run] [--tmux] FILE
                                  bring the bed up in the background and return
    spp apply [--dry-run] FILE    move the running bed to FILE by the smallest set of changes
    spp ps [--json]               one row per process: name, pid, state, restarts, uptime
    spp down                      stop everything in reverse order; nothing is left behind

The running bed is found in the state directory (``--state-dir``, default: see
:mod:`spp.integrations.bed.state`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spp.integrations.bed import procs as P
from spp.integrations.bed.check import load_bed
from spp.integrations.bed.plan import plan
from spp.integrations.bed.schema import Bed
from spp.integrations.bed.state import ControlError, default_state_dir, read_json, request, write_json
from spp.integrations.bed.yamlsafe import BedFileError

COMMANDS = ("up", "apply", "down", "ps", "validate")
UP_TIMEOUT = 300.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spp",
        description="A whole SPP bed (spp-ctl, primary, secondaries, wiring, namespaces, VMs, "
        "containers) from one YAML file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(__doc__ or "").split("::", 1)[-1],
        allow_abbrev=False,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir", type=Path, help=f"where the running bed is kept (default: {default_state_dir()})"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    v = sub.add_parser("validate", help="check bed files; start nothing", parents=[common])
    v.add_argument("files", nargs="+", metavar="FILE")
    u = sub.add_parser("up", help="bring a bed up in the background", parents=[common])
    u.add_argument("file", metavar="FILE")
    u.add_argument(
        "--dry-run", action="store_true", help="validate and print what would start; no side effects"
    )
    u.add_argument("--tmux", action="store_true", help="run each process in its own tmux window")
    u.add_argument("--attach", action="store_true", help="with --tmux: attach once up (only from a terminal)")
    a = sub.add_parser("apply", help="move the running bed to an edited file", parents=[common])
    a.add_argument("file", metavar="FILE")
    a.add_argument("--dry-run", action="store_true", help="print the changes; make none")
    ps = sub.add_parser("ps", help="what runs, with its state", parents=[common])
    ps.add_argument("--json", action="store_true", help="machine-readable rows")
    sub.add_parser("down", help="stop the running bed", parents=[common])
    return p


def _load(file: str) -> Bed:
    return load_bed(file)


# -- validate / dry run ------------------------------------------------------------------------


def summary(bed: Bed) -> str:
    kinds: dict[str, int] = {}
    for s in bed.secondaries:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    parts = [f"{n} {k}" for k, n in kinds.items()]
    for what, items in (("namespace", bed.namespaces), ("VM", bed.vms), ("container", bed.containers)):
        if items:
            parts.append(f"{len(items)} {what}{'s' if len(items) > 1 else ''}")
    return f"bed '{bed.name}': spp-ctl, primary" + "".join(f", {p}" for p in parts)


def cmd_validate(files: list[str]) -> int:
    failed = 0
    for f in files:
        try:
            bed = _load(f)
        except BedFileError as e:
            print(e, file=sys.stderr)
            failed += 1
            continue
        print(f"{f}: ok, {summary(bed)}")
    return 1 if failed else 0


def dry_run_up(bed: Bed, state_dir: Path) -> None:
    """What ``up`` would do, with every command line; touches nothing."""
    from spp.integrations.vm.qemu import shell_words

    logs = state_dir / "logs"
    commands = {"spp-ctl": P.ctl_argv(bed), "primary": P.primary_argv(bed, logs)}
    commands.update({s.name: P.secondary_argv(bed, s) for s in bed.secondaries})
    print(f"{summary(bed)} (dry run: nothing is started)")
    for step in plan(None, bed):
        line = f"  {step.text}"
        if step.op in ("start-ctl", "start-primary", "start-secondary"):
            name = {"start-ctl": "spp-ctl", "start-primary": "primary"}.get(step.op) or step.args[0]
            line += f"\n      $ {' '.join(_quote(w) for w in commands[name])}"
        elif step.op == "vm-start":
            from spp.integrations.bed.guests import vm_spec
            from spp.integrations.vm.qemu import qemu_argv

            spec = vm_spec(bed, step.args[0])
            line += "\n      $ " + shell_words(qemu_argv(spec)).replace("\n", "\n      ")
        elif step.op == "container-start":
            from spp.integrations.bed.guests import GuestError, container_launch

            try:
                line += "\n      $ " + container_launch(bed, step.args[0]).shell().replace("\n", "\n      ")
            except GuestError as e:
                line += f"\n      ({e})"
        print(line)


def _quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


# -- up ------------------------------------------------------------------------------------------


def _running(state_dir: Path) -> bool:
    with contextlib.suppress(ControlError):
        request(state_dir, {"op": "ps"}, timeout=2)
        return True
    status = read_json(state_dir / "status.json") or {}
    pid = status.get("supervisor")
    return bool(pid) and P.pid_runs(int(pid), _supervisor_argv(state_dir, bool(status.get("tmux"))))


def _supervisor_argv(state_dir: Path, tmux: bool) -> list[str]:
    argv = [*P.PY, "spp.integrations.bed.supervisor", str(state_dir)]
    return [*argv, "--tmux"] if tmux else argv


def cmd_up(args: argparse.Namespace, state_dir: Path) -> int:
    bed = _load(args.file)
    if args.dry_run:
        dry_run_up(bed, state_dir)
        return 0
    if state_dir.exists():
        if _running(state_dir):
            status = read_json(state_dir / "status.json") or {}
            print(
                f"spp up: bed '{status.get('name')}' is running already ({state_dir}): "
                "'spp apply FILE' changes it, 'spp down' stops it",
                file=sys.stderr,
            )
            return 1
        left = _cleanup_stale(state_dir)
        if left:
            print(f"spp up: a previous bed's supervisor died and left {left}; cleaned up", file=sys.stderr)
    try:
        state_dir.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        print(f"spp up: another bed is being started in {state_dir}", file=sys.stderr)
        return 1
    write_json(state_dir / "bed.json", bed.model_dump(mode="json"))
    argv = _supervisor_argv(state_dir, args.tmux)
    with open(state_dir / "supervisor.log", "ab") as out:
        sup = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + UP_TIMEOUT
    while True:
        status = read_json(state_dir / "status.json") or {}
        phase = status.get("phase")
        if phase == "up":
            break
        if phase == "failed" or sup.poll() is not None:
            sup.wait(30)
            error = status.get("error") or (state_dir / "supervisor.log").read_text(errors="replace")[-2000:]
            shutil.rmtree(state_dir, ignore_errors=True)
            print(f"spp up: {error}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            print(
                f"spp up: the bed did not come up within {UP_TIMEOUT:.0f} s; 'spp down' stops it",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.1)
    print(f"{summary(bed)} is up (state in {state_dir})")
    _print_rows(request(state_dir, {"op": "ps"})["processes"])
    if args.tmux:
        session = status.get("tmux")
        print(f"tmux windows: tmux -L {session} attach -t {session}")
        if args.attach and sys.stdin.isatty() and sys.stdout.isatty():
            os.execvp("tmux", ["tmux", "-L", str(session), "attach", "-t", str(session)])
    return 0


# -- apply / ps / down ---------------------------------------------------------------------------


def cmd_apply(args: argparse.Namespace, state_dir: Path) -> int:
    bed = _load(args.file)
    reply = request(state_dir, {"op": "apply", "bed": bed.model_dump(mode="json"), "dry_run": args.dry_run})
    steps = reply["steps"]
    if not steps:
        print("nothing to change")
    for text in steps:
        print(("would: " if args.dry_run else "") + text)
    return 0


def _print_rows(rows: list[dict[str, Any]]) -> None:
    width = max([len(r["name"]) for r in rows] + [4])
    print(f"{'NAME':<{width}}  {'PID':>7}  {'STATE':<10}  {'RESTARTS':>8}  {'UPTIME':>8}")
    for r in rows:
        up = r.get("uptime_s")
        uptime = f"{up:.0f}s" if isinstance(up, int | float) else "-"
        pid = r.get("pid") or "-"
        print(f"{r['name']:<{width}}  {pid!s:>7}  {r['state']:<10}  {r.get('restarts', 0):>8}  {uptime:>8}")


def cmd_ps(args: argparse.Namespace, state_dir: Path) -> int:
    try:
        reply = request(state_dir, {"op": "ps"}, timeout=30)
    except ControlError:
        if args.json:
            print("[]")
        else:
            print(f"no bed is running (state dir {state_dir})")
        return 0
    rows = reply["processes"]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_rows(rows)
    return 0


def _cleanup_stale(state_dir: Path) -> list[str]:
    """What a bed whose supervisor died left: its processes (checked by command line), namespaces,
    tmux server; all removed, with the state dir."""
    status = read_json(state_dir / "status.json") or {}
    left = []
    for row in status.get("processes", []):
        pid, argv = row.get("pid"), row.get("argv")
        if pid and argv and P.pid_runs(int(pid), list(argv)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
            left.append(row["name"])
    for name in status.get("namespaces", []):
        from spp.integrations.netns import ip

        if name in ip("netns", "list", check=False).stdout.split():
            ip("netns", "del", name, check=False)
            left.append(f"namespace {name}")
    if status.get("tmux"):
        P.Tmux(str(status["tmux"]), state_dir).destroy()
    shutil.rmtree(state_dir, ignore_errors=True)
    return left


def cmd_down(state_dir: Path) -> int:
    if not state_dir.exists():
        print(f"no bed is running (state dir {state_dir})")
        return 0
    status = read_json(state_dir / "status.json") or {}
    try:
        reply = request(state_dir, {"op": "down"})
    except ControlError as e:
        left = _cleanup_stale(state_dir)
        print(
            f"the bed's supervisor did not answer ({e}); removed what it left: {', '.join(left) or 'nothing'}"
        )
        return 0
    for text in reply["steps"]:
        print(text)
    pid = status.get("supervisor")
    deadline = time.monotonic() + 30
    while pid and state_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid:
        while P.pid_runs(int(pid), _supervisor_argv(state_dir, bool(status.get("tmux")))):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    print("bed down")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    state_dir: Path = args.state_dir or default_state_dir()
    try:
        if args.command == "validate":
            return cmd_validate(args.files)
        if args.command == "up":
            return cmd_up(args, state_dir)
        if args.command == "apply":
            return cmd_apply(args, state_dir)
        if args.command == "ps":
            return cmd_ps(args, state_dir)
        return cmd_down(state_dir)
    except BedFileError as e:
        print(e, file=sys.stderr)
        return 1
    except ControlError as e:
        print(f"spp {args.command}: {e}", file=sys.stderr)
        return 1
