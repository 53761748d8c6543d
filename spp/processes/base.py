"""What every SPP process shares: logging, signals, the segment, the control channel, shutdown."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from spp.engine import linux
from spp.engine.pool import BufferPool
from spp.engine.shm import Segment, SegmentError
from spp.engine.worker import SPIN_SECONDS
from spp.processes.channel import ControlChannel, ControlUnreachable
from spp.processes.commands import Reply, failed
from spp.processes.options import (
    MAX_BUSY_POLL_US,
    OptionError,
    busy_poll_us,
    parse_eal,
    parse_server,
    port_options,
    split_eal,
)

log = logging.getLogger(__name__)


def setup_logging(name: str, level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )


class SppProcess:
    """A process hosting the engine and answering spp-ctl. Subclasses implement :meth:`handle`."""

    name = "spp"
    pad_replies = True

    def __init__(self, seg: Segment, host: str, port: int, client_id: int, kind: str) -> None:
        # The shared process table row: refused if a live process holds this id, released at exit.
        seg.claim_process_slot(client_id, kind)
        self.seg = seg
        self.client_id = client_id
        self.pool = BufferPool(seg)  # the worker thread's handle (the control thread never allocates)
        self.channel = ControlChannel(
            host, port, self.dispatch, pad=self.pad_replies, name=self.name, still_wanted=self.still_wanted
        )
        self.exiting = False

    def still_wanted(self) -> bool:
        """Subclasses may end the control loop on their own; the primary's death is no reason:
        the segment outlives it, as DPDK's shared memory does, and traffic keeps flowing."""
        return True

    def dispatch(self, command: str) -> Any:
        tokens = command.split()
        if tokens[0] == "exit":
            self.exiting = True
            self.channel.closing.set()
            return self.exit_reply()
        return self.handle(tokens)

    def mark_registered(self) -> None:
        """spp-ctl asked ``_get_client_id``: the primary's ``launch`` waits for this."""
        self.seg.mark_registered(self.client_id)

    def exit_reply(self) -> Any:
        return {"result": "succeeded", "command": "exit"}

    def handle(self, tokens: list[str]) -> Reply | str:
        return failed(tokens[0], f"unknown command '{tokens[0]}'")

    def run(self) -> NoReturn:
        """Serve spp-ctl until told to stop, shut down, and end the process.

        The process ends with ``os._exit`` while its spp-ctl connection is still open, so the
        connection closes only when the process is gone: spp-ctl's ``DELETE`` answers on that
        EOF, and a script that relaunches the same id right after finds it free.
        """

        def on_signal(signum: int, _frame: object) -> None:
            log.info("%s: signal %d, shutting down", self.name, signum)
            self.channel.closing.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        code = 0
        try:
            self.channel.serve_forever()
        except ControlUnreachable as e:
            log.error("%s: %s", self.name, e)
            code = 1
        except BaseException:
            log.exception("%s: control loop failed", self.name)
            code = 1
        try:
            self.shutdown()
        except BaseException:
            log.exception("%s: shutdown failed", self.name)
            code = 1
        log.info("%s: exiting", self.name)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def shutdown(self) -> None:
        """Stop forwarding, release ports and buffers. Subclasses extend it."""
        self.pool.close()
        if self.seg.leave(self.client_id):
            log.info("%s: last process out: removed %s", self.name, self.seg.path)
            self._restore_interfaces()

    def _restore_interfaces(self) -> None:
        """Promiscuous mode the primary turned on goes off once nobody uses the segment."""
        for phy in self.seg.spec.phys:
            if phy.set_promisc:
                with contextlib.suppress(OSError):  # the interface may be gone already
                    linux.set_promiscuous(phy.iface, False)


def add_busy_poll_option(parser: argparse.ArgumentParser, who: str) -> None:
    """``--busy-poll-us US`` for a process whose forwarding threads are :class:`Worker` s
    (``who`` names them in the help): how long they poll on after the last packet."""
    parser.add_argument(
        "--busy-poll-us",
        type=busy_poll_us,
        default=round(SPIN_SECONDS * 1_000_000),
        metavar="US",
        help=(
            f"keep {who} polling the ports this many microseconds after the last packet before "
            "sleeping (default %(default)s: idle, it uses ~0 CPU). Longer trades CPU for "
            "latency, as NAPI busy polling does: traffic with gaps shorter than US never meets a "
            f"sleeping worker, which then uses a core while it flows (0..{MAX_BUSY_POLL_US})"
        ),
    )


def run_secondary(
    make: Callable[..., SppProcess], parser: argparse.ArgumentParser, argv: list[str] | None
) -> int:
    """``main()`` of spp-nfv, spp-vf and spp-mirror: parse SPP's command line (EAL options, ``--``,
    the application's), attach to the primary's segment and serve spp-ctl until told to exit.
    ``make`` is the secondary's class, called as ``make(seg, client_id, host, port, lcores,
    vhost_client, burst, options, spin=...)``.
    A command line that cannot be used is an error naming the option, exit status 1."""
    eal_args, app_args = split_eal(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(app_args)
    prog = parser.prog
    setup_logging(f"{prog.replace('-', '_')}:{args.client_id}", args.log_level)
    try:
        eal = parse_eal(eal_args)
        host, port = parse_server(args.server, 6666)
        if not 0 < args.client_id < 128:
            raise OptionError(f"client id {args.client_id} out of range 1..127")
        if args.burst < 1:
            raise OptionError(f"--burst {args.burst}: must be at least 1")
        options = port_options(eal.vdevs, args.vhost_dir)
        seg = Segment.attach(eal.file_prefix)
        proc = make(
            seg,
            args.client_id,
            host,
            port,
            eal.lcores,
            args.vhost_client,
            args.burst,
            options,
            spin=args.busy_poll_us / 1_000_000,
        )
    except (OptionError, SegmentError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    log.info("client id %d, lcores %s, spp-ctl %s:%d", args.client_id, eal.lcores, host, port)
    return proc.run()
