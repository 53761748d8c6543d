"""Entry point of ``spp``: arguments, start-up probe, then batch or interactive mode.

Batch mode (``-e CMD``, ``--file RECIPE`` or a non-tty stdin) runs the lines and exits with 1 if
any of them failed, so shell scripts and CI can rely on the exit status. Exit status 2 is for bad
command-line arguments (argparse's convention).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator

from spp.console import quiet_broken_pipe

from . import top
from .client import DEFAULT_TIMEOUT, CtlError, SppCtlClient, parse_server_addr
from .common import CliError
from .config import CliConfig, ConfigError
from .session import Session
from .shell import Shell

__all__ = ["build_parser", "main"]

HISTORY_FILE = "~/.spp_history"
WAIT_PRI_INTERVAL = 0.5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spp",
        description="SPP command line interface: control spp_primary and secondaries through spp-ctl.",
        epilog=(
            "Without -e/--file and with a terminal on stdin, an interactive shell starts. "
            "'spp top' shows live packet rates instead. "
            "'spp up|apply|down|ps|validate' run a whole bed from one YAML file (see 'spp up --help')."
        ),
    )
    p.add_argument(
        "-b",
        "--bind-addr",
        action="append",
        metavar="ADDR[:PORT]",
        help="spp-ctl address (repeatable; the first is used, 'server N' switches). Default 127.0.0.1:7777",
    )
    p.add_argument("--wait-pri", action="store_true", help="wait until spp_primary is registered to spp-ctl")
    p.add_argument("--wait-pri-timeout", type=float, default=20.0, metavar="SECS", help=argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE", help="YAML config file (SPP's default.yml layout)")
    p.add_argument(
        "-e",
        "--command",
        action="append",
        dest="commands",
        metavar="CMD",
        help="run CMD and exit (repeatable, e.g. -e 'nfv 1; status')",
    )
    p.add_argument(
        "-f",
        "--file",
        action="append",
        dest="files",
        metavar="RECIPE",
        help="run the commands of a recipe file",
    )
    p.add_argument(
        "--stop-on-error", action="store_true", help="batch mode: stop at the first failed command"
    )
    p.add_argument("--echo", action="store_true", help="batch mode: print each command before running it")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECS",
        help="REST request timeout (default 5)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    p.add_argument(
        "view",
        nargs="?",
        choices=["top"],
        metavar="top",
        help="'top': per-port packet rates of every process until Ctrl-C (see 'spp top --help')",
    )
    p.add_argument("view_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def _main_top(args: argparse.Namespace, client: SppCtlClient) -> int:
    parser = top.build_parser("spp top")
    parser.add_argument("-b", "--bind-addr", metavar="ADDR[:PORT]", help="spp-ctl address (as spp -b)")
    try:
        opts = top.parse_args(parser, args.view_args)
    except top.HelpShown:
        return 0
    except CliError as e:
        print(e, file=sys.stderr)
        return 2
    if opts.bind_addr:
        try:
            client = SppCtlClient(*parse_server_addr(opts.bind_addr), timeout=args.timeout)
        except ValueError as e:
            print(f"spp top: invalid --bind-addr: {e}", file=sys.stderr)
            return 2
    try:
        top.run(client, opts.interval, opts.count, plot=opts.plot)
    except CtlError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


def _wait_primary(client: SppCtlClient, max_wait: float) -> bool:
    """``--wait-pri``: poll ``/v1/processes`` until a primary shows up (SPP's output)."""
    print("Waiting for spp_primary is ready ...", end="", flush=True)
    waited = 0.0
    while waited < max_wait:
        try:
            if any(p.get("type") == "primary" for p in client.processes()):
                print(f" OK! ({waited}[sec])")
                return True
        except CtlError:
            pass
        print(".", end="", flush=True)
        time.sleep(WAIT_PRI_INTERVAL)
        waited += WAIT_PRI_INTERVAL
    print(f" Timeout! ({waited}[sec])")
    return False


def _batch_lines(files: list[str], commands: list[str]) -> list[str]:
    lines: list[str] = []
    for fname in files:
        with open(fname, encoding="utf-8") as f:
            lines += f.read().splitlines()
    for c in commands:
        lines += c.splitlines() or [""]
    return lines


def _stdin_lines() -> Iterator[str]:
    """Lines of a piped stdin, read lazily so ``spp`` can be driven line by line."""
    yield from sys.stdin


#: ``spp up FILE`` and friends: a whole bed from one file (spp/integrations/bed/), dispatched
#: before SPP's own options are parsed, so plain ``spp [OPTIONS]`` stays SPP's shell.
BED_COMMANDS = ("up", "apply", "down", "ps", "validate")


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in BED_COMMANDS:
        from spp.integrations.bed.cli import main as bed_main

        return bed_main(words)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.CRITICAL)

    addrs = []
    for text in args.bind_addr or ["127.0.0.1:7777"]:
        try:
            addrs.append(parse_server_addr(text))
        except ValueError as e:
            parser.error(f"invalid --bind-addr: {e}")
    try:
        config = CliConfig.load(args.config) if args.config else CliConfig()
    except ConfigError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1

    session = Session([SppCtlClient(h, p, timeout=args.timeout) for h, p in addrs], config)
    if args.view == "top":
        try:
            return _main_top(args, session.client)
        except KeyboardInterrupt:
            return 0
        finally:
            session.close()
    try:
        try:
            session.client.processes()
        except CtlError as e:
            if e.status is None:
                print(
                    f"Is not spp-ctl running on {session.client.addr}, nor correct IP address?",
                    file=sys.stderr,
                )
            else:
                print(
                    f"Error: spp-ctl at {session.client.addr} refused GET /v1/processes: {e.message}",
                    file=sys.stderr,
                )
            return 1

        failed = 0
        if args.wait_pri and not _wait_primary(session.client, args.wait_pri_timeout):
            failed = 1

        batch: Iterable[str] | None = None
        if args.files or args.commands:
            try:
                batch = _batch_lines(args.files or [], args.commands or [])
            except OSError as e:
                print(f"Error: cannot read recipe '{e.filename}': {e.strerror}.", file=sys.stderr)
                return 1
        elif not sys.stdin.isatty():
            batch = _stdin_lines()

        if batch is not None:
            shell = Shell(session, echo=args.echo, debug=args.debug)
            failed += shell.run_lines(batch, stop_on_error=args.stop_on_error)
            return 1 if failed else 0

        shell = Shell(
            session, interactive=True, history_file=os.path.expanduser(HISTORY_FILE), debug=args.debug
        )
        shell.interact()
        return 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    finally:
        session.close()


if __name__ == "__main__":
    sys.exit(main())
