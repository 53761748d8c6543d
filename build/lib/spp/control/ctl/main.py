"""``spp-ctl`` command line: parse options, set up logging, serve until SIGINT/SIGTERM.

Same options as SPP's ``spp-ctl`` (``-b``, ``-p``, ``-s``, ``-a``) plus ``--log-level``, the
timeouts and the access options. The default bind address is 127.0.0.1, not every interface: the
REST API and the wire ports have no authentication. The wire ports accept only processes of this
host running as spp-ctl's user or root; with ``-b`` on another address, processes on other hosts
are accepted only with ``--allow-remote-processes`` (their user cannot be checked). The REST API
answers only requests addressed to an IP literal, ``localhost`` or an ``--allow-host`` name, and
refuses state-changing requests from a foreign browser ``Origin`` (see :mod:`.httpguard`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .loglimit import RateLimitFilter
from .server import Config, Controller

LOG = logging.getLogger("spp.control.ctl")


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {text}")
    return port


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spp-ctl", description="SPP controller: REST API + process wire ports"
    )
    parser.add_argument(
        "-b", "--bind-addr", default="127.0.0.1", help="address of all listeners (default 127.0.0.1)"
    )
    parser.add_argument("-p", dest="pri_port", type=_port, default=5555, help="primary port (default 5555)")
    parser.add_argument("-s", dest="sec_port", type=_port, default=6666, help="secondary port (default 6666)")
    parser.add_argument("-a", dest="api_port", type=_port, default=7777, help="REST API port (default 7777)")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="log level (default INFO)",
    )
    parser.add_argument(
        "--timeout", dest="command_timeout", type=_seconds, default=10.0, metavar="SECONDS",
        help="seconds a process gets to answer a command before it is dropped (default 10)",
    )  # fmt: skip
    parser.add_argument(
        "--launch-timeout", type=_seconds, default=20.0, metavar="SECONDS",
        help="seconds a launched secondary gets to register with spp-ctl (default 20)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-remote-processes", action="store_true",
        help="accept SPP processes connecting from other hosts (their user cannot be checked; "
        "by default only processes of this host running as spp-ctl's user or root may register)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-host", action="append", default=[], metavar="NAME",
        help="a host name the REST API answers to besides IP addresses and localhost (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-origin", action="append", default=[], metavar="ORIGIN",
        help="a web origin (e.g. http://dashboard.example:8080) allowed to change state (repeatable)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RateLimitFilter())
    config = Config(
        bind_addr=args.bind_addr,
        pri_port=args.pri_port,
        sec_port=args.sec_port,
        api_port=args.api_port,
        command_timeout=args.command_timeout,
        launch_timeout=args.launch_timeout,
        allow_remote_processes=args.allow_remote_processes,
        allowed_hosts=tuple(args.allow_host),
        allowed_origins=tuple(args.allow_origin),
    )
    try:
        asyncio.run(Controller(config).run())
    except OSError as exc:
        LOG.error("cannot listen on %s: %s", args.bind_addr, exc)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
