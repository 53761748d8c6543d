"""``spp-l2fwd``: forward between two ports, optionally rewriting MAC addresses.

The VNF that SPP's recipes run in containers and VMs (DPDK's l2fwd), on our engine: frames
received on port 0 go out of port 1 and the other way round (``--oneway``: 0 to 1 only, which is
what two ring ports need, since a ring port is one queue that both directions would drain).

MAC rewrite, per transmit port, applied to the whole burst with two array stores:

* ``--mac-updating``: DPDK l2fwd's rule, destination ``02:00:00:00:00:<tx port>`` and source the
  transmit port's own MAC (when the port has one; ring and pcap ports have none);
* ``--eth-dest N,MAC``: destination MAC for frames sent out of port N (repeatable);
* ``--eth-src N,MAC``: source MAC for frames sent out of port N;
* ``--swap``: exchange source and destination (a reflector).

Counters (per port rx/tx/tx_drop) are printed on exit and on SIGUSR1, as text or ``--json``.
The forwarding runs on the engine's worker thread, so an idle l2fwd sleeps instead of spinning.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from spp.console import quiet_broken_pipe
from spp.engine.ports import Port
from spp.engine.ports.base import (
    NOTHING,
    RX,
    RX_BYTES,
    RX_DROP,
    TX,
    TX_BYTES,
    TX_DROP,
    burst_bytes,
    forward_one,
)
from spp.engine.worker import DEFAULT_BURST, Worker
from spp.processes.base import add_busy_poll_option
from spp.tools.frames import FieldError, mac_bytes
from spp.tools.ports import ToolError, ToolPorts, add_port_options, parse_port


@dataclass(frozen=True)
class Rewrite:
    """What to write into frames before they leave a port (``None``: leave it)."""

    dst: np.ndarray | None = None
    src: np.ndarray | None = None
    swap: bool = False

    @property
    def active(self) -> bool:
        return self.swap or self.dst is not None or self.src is not None


@dataclass(frozen=True)
class RewriteRoute:
    """A worker step: ``src`` -> ``dst`` with the MAC rewrite of ``dst`` applied per burst."""

    src: Port
    dst: Port
    rewrite: Rewrite

    @property
    def inputs(self) -> tuple[Port, ...]:
        return (self.src,)

    def run(self, burst: int) -> int:
        one = self.src.rx_one()
        if one >= 0:  # a lone frame (Port.rx_one): rewritten and sent with Python ints only
            self._rewrite_one(one)
            forward_one(self.src, self.dst, one)
            return 1
        if one == NOTHING:
            return 0
        bufs = self.src.rx_burst(burst)
        n = len(bufs)
        if n == 0:
            return 0
        lengths = self.src.pool.lengths
        nbytes = burst_bytes(lengths.take(bufs))
        self.src.counters[RX] += n
        self.src.counters[RX_BYTES] += nbytes
        data = self.src.pool.data
        rw = self.rewrite
        if rw.swap:
            macs = data[bufs, 0:12]
            data[bufs, 0:6] = macs[:, 6:12]
            data[bufs, 6:12] = macs[:, 0:6]
        if rw.dst is not None:
            data[bufs, 0:6] = rw.dst
        if rw.src is not None:
            data[bufs, 6:12] = rw.src
        sent = self.dst.tx_burst(bufs)
        self.dst.counters[TX] += sent
        if sent < n:
            nbytes -= burst_bytes(lengths.take(bufs[sent:]))
            self.src.pool.free(bufs[sent:])
            self.dst.counters[TX_DROP] += n - sent
        self.dst.counters[TX_BYTES] += nbytes
        return n

    def _rewrite_one(self, buf: int) -> None:
        rw = self.rewrite
        if not rw.active:
            return
        mv = self.src.pool.data_mv
        o = buf * self.src.pool.buf_size
        if rw.swap:
            dst = bytes(mv[o : o + 6])
            mv[o : o + 6] = mv[o + 6 : o + 12]
            mv[o + 6 : o + 12] = dst
        if rw.dst is not None:
            mv[o : o + 6] = rw.dst
        if rw.src is not None:
            mv[o + 6 : o + 12] = rw.src


def _indexed_mac(item: str, option: str) -> tuple[int, np.ndarray]:
    index, sep, mac = item.partition(",")
    if not sep or index.strip() not in ("0", "1"):
        raise FieldError(f"{option} {item}: expected PORT,MAC with PORT 0 or 1")
    return int(index), np.frombuffer(mac_bytes(mac.strip()), np.uint8)


def rewrites(args: argparse.Namespace, ports: list[Port]) -> list[Rewrite]:
    """The rewrite for frames leaving port 0 and port 1."""
    dst: list[np.ndarray | None] = [None, None]
    src: list[np.ndarray | None] = [None, None]
    if args.mac_updating:
        for i, port in enumerate(ports):
            dst[i] = np.frombuffer(bytes([2, 0, 0, 0, 0, i]), np.uint8)
            own = getattr(port, "mac", None)
            if isinstance(own, str):
                src[i] = np.frombuffer(mac_bytes(own), np.uint8)
    for item in args.eth_dest:
        i, mac = _indexed_mac(item, "--eth-dest")
        dst[i] = mac
    for item in args.eth_src:
        i, mac = _indexed_mac(item, "--eth-src")
        src[i] = mac
    return [Rewrite(dst[i], src[i], args.swap) for i in range(2)]


def counters(ports: list[Port], base: dict[str, np.ndarray]) -> dict[str, Any]:
    """Counts since start: shared rows (ring, phy) may hold what an earlier user of the row moved."""
    out = {}
    for p in ports:
        c = p.counters.astype(np.int64) - base[str(p.uid)]
        out[str(p.uid)] = {
            "rx": int(c[RX]),
            "rx_drop": int(c[RX_DROP]),
            "tx": int(c[TX]),
            "tx_drop": int(c[TX_DROP]),
        }
    return out


def format_counters(c: dict[str, Any]) -> str:
    return "\n".join(
        f"{name}: rx {v['rx']:,} rx_drop {v['rx_drop']:,} tx {v['tx']:,} tx_drop {v['tx_drop']:,}"
        for name, v in c.items()
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spp-l2fwd",
        description="Forward frames between two SPP ports (DPDK l2fwd's role), with optional MAC rewrite.",
    )
    p.add_argument("port0", help="first port (phy:N, ring:N, tap:N, pcap:N, vhost:N, ...)")
    p.add_argument("port1", help="second port")
    p.add_argument("--oneway", action="store_true", help="forward port0 -> port1 only")
    p.add_argument(
        "--mac-updating", action="store_true", help="dst 02:00:00:00:00:<tx port>, src MAC of the tx port"
    )
    p.add_argument("--eth-dest", action="append", default=[], metavar="PORT,MAC", help="dst MAC out of PORT")
    p.add_argument("--eth-src", action="append", default=[], metavar="PORT,MAC", help="src MAC out of PORT")
    p.add_argument("--swap", action="store_true", help="swap source and destination MAC")
    p.add_argument("--burst", type=int, default=DEFAULT_BURST, help="max frames per burst")
    p.add_argument("--json", action="store_true", help="print counters as JSON")
    add_busy_poll_option(p, "the forwarding thread")
    add_port_options(p)
    return p


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        uids = [parse_port(args.port0), parse_port(args.port1)]
        if uids[0] == uids[1]:
            raise ToolError(f"port0 and port1 are both {uids[0]}")
        ports_h = ToolPorts.open(args, "l2fwd")
    except (ToolError, FieldError) as e:
        print(f"spp-l2fwd: error: {e}", file=sys.stderr)
        return 1
    worker: Worker | None = None
    done = threading.Event()
    try:
        try:
            ports = [ports_h.port(u) for u in uids]
            rw = rewrites(args, ports)
        except (ToolError, FieldError) as e:
            print(f"spp-l2fwd: error: {e}", file=sys.stderr)
            return 1
        steps = [RewriteRoute(ports[0], ports[1], rw[1])]
        if not args.oneway:
            steps.append(RewriteRoute(ports[1], ports[0], rw[0]))

        base = {str(p.uid): p.counters.astype(np.int64) for p in ports}

        def show() -> None:
            c = counters(ports, base)
            print(json.dumps(c) if args.json else format_counters(c), flush=True)

        signal.signal(signal.SIGUSR1, lambda _s, _f: show())
        signal.signal(signal.SIGTERM, lambda _s, _f: done.set())
        signal.signal(signal.SIGINT, lambda _s, _f: done.set())
        worker = Worker(ports_h.pool, name="l2fwd", burst=args.burst, spin=args.busy_poll_us / 1_000_000)
        worker.start()
        worker.publish(steps)
        arrow = "->" if args.oneway else "<->"
        print(f"spp-l2fwd: forwarding {uids[0]} {arrow} {uids[1]}", file=sys.stderr, flush=True)
        while not done.wait(1.0):
            pass
        worker.publish(None)
        show()
    finally:
        if worker is not None:
            worker.stop()
        ports_h.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
