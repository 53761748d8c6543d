"""``spp top`` and the shell's ``top``: packet rates of every port of every process, refreshed
until interrupted, like ``top`` for the panel.

One sample is a set of counters read over the REST API (``/v1/processes`` and each process's
status); a table is the difference of two samples divided by the time between them. On a
terminal each table replaces the previous one; in a pipe the tables follow each other, separated
by a blank line, so ``spp top -n 5 | tee rates.txt`` and ``spp top --once`` work in scripts.

Ports count bytes beside packets (``rx_bytes``/``tx_bytes`` in the primary's status and in the
``stats`` of nfv, vf and mirror), so their rows show bit/s; vf/mirror component rows count
packets only and show ``n/a`` rather than a rate guessed from a frame size. spp_pcap's writer
counts the bytes it writes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, NoReturn

from spp.control.view.plot import PlotError, Series, check_plot_path, write_plot
from spp.control.view.rates import human as _human_rate

from .client import CtlError, SppCtlClient
from .common import SEC_TYPES, CliError

__all__ = [
    "LEGEND",
    "HelpShown",
    "RateRow",
    "build_parser",
    "format_table",
    "rates",
    "run",
    "sample",
]

#: What each column and counter means; shown by ``help top`` and ``help status``.
LEGEND = """\
Counters (in 'pri; status', 'nfv N; status', 'vf N; status', ... and the rates of 'top'):
  rx       packets the port received: taken from its device, ring or file into the panel
  tx       packets the port sent: handed to its device, ring or file and accepted there
  rx_drop  packets that arrived but were lost on the way in: no free buffer in the pool,
           a frame too long for a buffer, a broken frame
  tx_drop  packets given to the port that it could not send (ring full, socket buffer full,
           interface down, frame larger than the MTU allows); they are freed, not queued
  drop     (vf/mirror components) packets a component discarded: no classifier entry and no
           default, or no buffer left for a mirror copy
  primary rows of 'top' and the phy/ring tables of 'pri; status' are totals over all processes;
  nfv, vf and mirror rows are that process's own share.
Rates in 'top': pps = packets per second; drop pps = rx_drop + tx_drop (+ drop) per second;
  bit/s from the ports' byte counters (frames as in the buffer: no FCS, preamble or gap);
  'n/a' for vf/mirror components, which count packets only; spp_pcap's writer counts the
  bytes it writes (pcap record headers included);
  '-' on the first table after a port appeared. k = 10^3, M = 10^6, G = 10^9."""

DEFAULT_INTERVAL = 1.0
MIN_INTERVAL = 0.1
CLEAR_SCREEN = "\x1b[H\x1b[2J"

Key = tuple[str, str]  # (process, port or component)


def _counters(rx: Any = 0, tx: Any = 0, drop: Any = 0, **extra: Any) -> dict[str, int]:
    out = {"rx": int(rx or 0), "tx": int(tx or 0), "drop": int(drop or 0)}
    for k, v in extra.items():
        if isinstance(v, int):
            out[k] = v
    return out


def _primary_rows(st: dict[str, Any]) -> dict[Key, dict[str, int]]:
    rows: dict[Key, dict[str, int]] = {}
    for kind, key in (("phy", "phy_ports"), ("ring", "ring_ports")):
        for p in st.get(key) or []:
            drop = int(p.get("rx_drop") or 0) + int(p.get("tx_drop") or 0)
            rows[("primary", f"{kind}:{p.get('id')}")] = _counters(
                p.get("rx"), p.get("tx"), drop, rx_bytes=p.get("rx_bytes"), tx_bytes=p.get("tx_bytes")
            )
    return rows


def _port_rows(name: str, st: dict[str, Any]) -> dict[Key, dict[str, int]]:
    rows: dict[Key, dict[str, int]] = {}
    for p in st.get("stats") or []:
        if isinstance(p, dict) and "port" in p:
            drop = int(p.get("rx_drop") or 0) + int(p.get("tx_drop") or 0)
            rows[(name, str(p["port"]))] = _counters(
                p.get("rx"), p.get("tx"), drop, rx_bytes=p.get("rx_bytes"), tx_bytes=p.get("tx_bytes")
            )
    return rows


def _worker_rows(name: str, st: dict[str, Any]) -> dict[Key, dict[str, int]]:
    rows: dict[Key, dict[str, int]] = {}
    for comp in st.get("components") or []:
        c = comp.get("counters")
        if "name" not in comp or not isinstance(c, dict):
            continue
        drop = int(c.get("tx_drop") or 0) + int(c.get("drop") or 0)
        rows[(name, f"{comp['name']} ({comp.get('type')})")] = _counters(c.get("rx"), c.get("tx"), drop)
    return rows


def _pcap_rows(name: str, st: dict[str, Any]) -> dict[Key, dict[str, int]]:
    rows: dict[Key, dict[str, int]] = {}
    for core in st.get("core") or []:
        if core.get("role") == "receive":
            ports = [str(p.get("port")) for p in core.get("rx_port") or []]
            label = f"{', '.join(ports) or 'receive'} (receive)"
            rows[(name, label)] = _counters(core.get("received"), 0, core.get("dropped"))
        elif "written" in core:
            label = f"writer core:{core.get('core')}"
            drop = int(core.get("dropped") or 0)
            rows[(name, label)] = _counters(0, core.get("written"), drop, tx_bytes=core.get("bytes"))
    return rows


def sample(client: SppCtlClient) -> dict[Key, dict[str, int]]:
    """Every counter spp-ctl can tell, keyed by (process, port); a process that vanishes while
    being asked is left out of this sample."""
    rows: dict[Key, dict[str, int]] = {}
    procs = client.processes()
    order = ["primary", *SEC_TYPES]
    procs.sort(
        key=lambda p: (order.index(p["type"]) if p.get("type") in order else 99, p.get("client-id", 0))
    )
    for p in procs:
        kind, cid = p.get("type"), p.get("client-id")
        name = "primary" if kind == "primary" else f"{kind} {cid}"
        try:
            if kind == "primary":
                rows.update(_primary_rows(client.get("primary/status") or {}))
            elif kind == "nfv":
                rows.update(_port_rows(name, client.get(f"nfvs/{cid}") or {}))
            elif kind in ("vf", "mirror"):
                st = client.get(f"{kind}s/{cid}") or {}
                rows.update(_worker_rows(name, st))
                rows.update(_port_rows(name, st))  # per port, when the process reports ``stats``
            elif kind == "pcap":
                rows.update(_pcap_rows(name, client.get(f"pcaps/{cid}") or {}))
        except CtlError as e:
            if e.status is None:  # spp-ctl itself is gone or stuck: say so
                raise
    return rows


@dataclass(frozen=True)
class RateRow:
    process: str
    port: str
    rx_pps: float | None
    tx_pps: float | None
    drop_pps: float | None
    rx_bps: float | None
    tx_bps: float | None


def _rate(prev: dict[str, int] | None, cur: dict[str, int], key: str, dt: float) -> float | None:
    if prev is None or key not in prev or key not in cur:
        return None
    # A counter that went down was cleared ('pri; clear') or its port re-added: start again.
    return max(0, cur[key] - prev[key]) / dt


def rates(prev: dict[Key, dict[str, int]], cur: dict[Key, dict[str, int]], dt: float) -> list[RateRow]:
    rows = []
    for key, c in cur.items():
        p = prev.get(key)
        rows.append(
            RateRow(
                key[0],
                key[1],
                _rate(p, c, "rx", dt),
                _rate(p, c, "tx", dt),
                _rate(p, c, "drop", dt),
                None if "rx_bytes" not in c else _scaled(_rate(p, c, "rx_bytes", dt), 8),
                None if "tx_bytes" not in c else _scaled(_rate(p, c, "tx_bytes", dt), 8),
            )
        )
    return rows


def _scaled(v: float | None, factor: float) -> float | None:
    return None if v is None else v * factor


def human(v: float | None, counted: bool = True) -> str:
    """A rate as the view writes it (``1.23k``, ``-`` before one exists); ``n/a`` if never counted."""
    return _human_rate(v) if counted else "n/a"


HEADER = ("PROCESS", "PORT", "rx pps", "tx pps", "drop pps", "rx bit/s", "tx bit/s")


def format_table(
    addr: str, interval: float, rows: list[RateRow], now: float | None = None, endless: bool = True
) -> list[str]:
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    until = " (Ctrl-C to stop)" if endless else ""
    lines = [f"spp top - {addr} - {stamp} - rates over {interval:g} s{until}"]
    cells = [list(HEADER)]
    for r in rows:
        cells.append(
            [
                r.process,
                r.port,
                human(r.rx_pps),
                human(r.tx_pps),
                human(r.drop_pps),
                human(r.rx_bps, r.rx_bps is not None or r.rx_pps is None),
                human(r.tx_bps, r.tx_bps is not None or r.tx_pps is None),
            ]
        )
    if not rows:
        lines.append("No ports with counters yet (no process has added a port).")
        return lines
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    for row in cells:
        left = [f"{row[i]:<{widths[i]}}" for i in (0, 1)]
        right = [f"{row[i]:>{max(widths[i], 8)}}" for i in range(2, len(HEADER))]
        lines.append("  ".join(left + right).rstrip())
    if any(r.rx_bps is None and r.tx_bps is None for r in rows):
        lines.append("n/a: this row counts packets only, not bytes ('help top' explains every column).")
    return lines


class HelpShown(Exception):
    """``top -h`` printed its help; there is nothing to run."""


class _Parser(argparse.ArgumentParser):
    """Reports bad options as :class:`CliError` instead of exiting: ``top`` runs inside the shell."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message}. Usage: {self.format_usage().strip()[len('usage: ') :]}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise CliError(message.strip())
        raise HelpShown


def build_parser(prog: str = "spp top") -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description="Show per-port packet rates of every SPP process, refreshed until Ctrl-C.",
        epilog="In a pipe or file the tables follow each other; on a terminal each replaces the last.",
        exit_on_error=False,
    )
    p.add_argument(
        "-i",
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="SECS",
        help=f"seconds between refreshes (default {DEFAULT_INTERVAL:g}, at least {MIN_INTERVAL:g})",
    )
    p.add_argument("-n", "--count", type=int, metavar="COUNT", help="show COUNT tables, then exit")
    p.add_argument("--once", action="store_true", help="show one table (same as -n 1)")
    p.add_argument(
        "--plot",
        metavar="FILE",
        help="at the end (also after Ctrl-C), write the rates over time to FILE "
        "(.svg, or .png with matplotlib)",
    )
    return p


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentError as e:
        parser.error(str(e))
    if args.once:
        args.count = 1
    if args.count is not None and args.count < 1:
        raise CliError(f"{parser.prog}: COUNT must be 1 or more, got {args.count}.")
    if args.plot:
        try:
            check_plot_path(args.plot)
        except PlotError as e:
            raise CliError(f"{parser.prog}: {e}.") from e
    if not args.interval >= MIN_INTERVAL:
        raise CliError(
            f"{parser.prog}: the interval must be at least {MIN_INTERVAL:g} s, got {args.interval:g}."
        )
    return args


def run(
    client: SppCtlClient,
    interval: float,
    count: int | None,
    out: IO[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    plot: str | None = None,
) -> None:
    """Print ``count`` tables (or until Ctrl-C, which ends it normally); with ``plot``, then write
    the rates over time to that file."""
    stream = out or sys.stdout
    tty = stream.isatty()
    shown = 0
    history: list[tuple[float, list[RateRow]]] = []
    try:
        prev, t_prev = sample(client), time.monotonic()
        t_start = t_prev
        while count is None or shown < count:
            sleep(interval)
            cur, t_cur = sample(client), time.monotonic()
            rows = rates(prev, cur, t_cur - t_prev)
            history.append((t_cur - t_start, rows))
            lines = format_table(client.addr, interval, rows, endless=count is None)
            if tty:
                stream.write(CLEAR_SCREEN)
            elif shown:
                stream.write("\n")
            stream.write("\n".join(lines) + "\n")
            stream.flush()
            shown += 1
            prev, t_prev = cur, t_cur
    except KeyboardInterrupt:
        if tty:
            stream.write("\n")
            stream.flush()
    if plot:
        write_rate_plot(plot, history, client.addr)
        stream.write(f"Rates plotted to '{plot}'.\n")
        stream.flush()


PLOT_LINES = 10


def write_rate_plot(path: str, history: list[tuple[float, list[RateRow]]], addr: str) -> None:
    """One line per (row, direction) that moved packets, the busiest :data:`PLOT_LINES` of them."""
    series: Series = {}
    for t, rows in history:
        for r in rows:
            for direction, v in (("rx", r.rx_pps), ("tx", r.tx_pps)):
                if v is not None:
                    series.setdefault(f"{r.process} {r.port} {direction}", []).append((t, v))
    busiest = sorted(series, key=lambda k: -max(v for _, v in series[k]))[:PLOT_LINES]
    chosen = {k: series[k] for k in busiest if max(v for _, v in series[k]) > 0}
    try:
        write_plot(path, chosen, f"spp top - {addr} - packet rates", "pps")
    except PlotError as e:
        raise CliError(str(e)) from e
