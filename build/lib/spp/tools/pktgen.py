"""``spp-pktgen``: generate test traffic on an SPP port and measure what comes back.

The role pktgen-dpdk plays next to SPP, without DPDK: UDP/IPv4 frames at a given rate (packets or
bits per second), of a fixed size or a range, for a count or a duration, with MAC/VLAN/IP/UDP
fields fixed or stepping through ranges. Each frame carries a signature (sequence number and send
time, :mod:`spp.tools.frames`), so a receiver (the same process with ``--rx``, or another
``spp-pktgen`` with only ``--rx``) reports loss, duplicates, reordering and latency.

Sizes and bit rates count the frame as it sits in the buffer (what tcpdump shows): no FCS,
preamble or inter-frame gap, so 64-byte frames at 10 Mbit/s are 19,531 pps.

While it runs it prints one line per ``--interval`` (plain lines, so logs and pipes work); at the
end a summary, or with ``--json`` a JSON document on stdout (live lines then go to stderr).

Examples::

    spp-pktgen --file-prefix spp --tx ring:0 --rx ring:1 --rate 100k --count 1000000
    spp-pktgen --iface veth0 --tx phy:0 --size 64-1500 --rate 200Mbps --duration 10
    spp-pktgen --iface veth1 --rx phy:0 --duration 12 --json
"""

from __future__ import annotations

import argparse
import json
import math
import re
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from spp.console import quiet_broken_pipe
from spp.engine.ports import Port
from spp.engine.ports.base import RX, TX, TX_DROP
from spp.tools.frames import (
    FieldError,
    FrameBuilder,
    FrameSpec,
    parse_ip_span,
    parse_mac_span,
    parse_port_span,
    parse_size_span,
    read_signatures,
)
from spp.tools.ports import ToolError, ToolPorts, add_port_options, parse_port
from spp.tools.stats import RxStats

RX_BURST = 256
_RATE = re.compile(r"^(?P<num>\d+(?:\.\d*)?)\s*(?P<mult>[kKmMgG]?)\s*(?P<unit>pps|bps|bit/s|b/s)?$")
_MULT = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


@dataclass(frozen=True)
class Rate:
    """``None`` values: as fast as the port takes them."""

    pps: float | None = None
    bps: float | None = None

    def packets_per_second(self, mean_size: float) -> float | None:
        if self.bps is not None:
            return self.bps / (8 * mean_size)
        return self.pps


def parse_rate(text: str) -> Rate:
    """``max``, ``10000``, ``10kpps``, ``1.5M`` (pps), ``100Mbps``, ``1Gbit/s``."""
    if text.strip().lower() == "max":
        return Rate()
    m = _RATE.match(text.strip())
    if not m:
        raise FieldError(f"invalid rate '{text}': expected e.g. 10000, 10kpps, 100Mbps or max")
    value = float(m["num"]) * _MULT[m["mult"].lower()]
    if value <= 0:
        raise FieldError(f"invalid rate '{text}': must be positive")
    if m["unit"] in ("bps", "bit/s", "b/s"):
        return Rate(bps=value)
    return Rate(pps=value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spp-pktgen",
        description="Generate UDP test traffic on an SPP port; measure loss, reordering and latency.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1] if __doc__ else None,
    )
    p.add_argument("--tx", metavar="PORT", help="port to send on (phy:N, ring:N, tap:N, pcap:N, ...)")
    p.add_argument("--rx", metavar="PORT", help="port to receive and measure on")
    g = p.add_argument_group("how much")
    g.add_argument("--rate", default="max", help="pps (10000, 10kpps) or bit/s (100Mbps); default max")
    g.add_argument("--count", type=int, help="frames to send (with --rx only: frames to wait for)")
    g.add_argument("--duration", type=float, help="seconds to send (with --rx only: to listen)")
    g.add_argument("--size", default="64", help="frame size in bytes without FCS, or a range 64-1500")
    g.add_argument("--burst", type=int, default=32, help="frames per transmit burst (default %(default)s)")
    f = p.add_argument_group("frame fields (each may be a range LOW-HIGH, stepped per frame)")
    f.add_argument("--src-mac", default="02:00:00:00:00:01")
    f.add_argument("--dst-mac", default="02:00:00:00:00:02")
    f.add_argument("--vlan", type=int, help="802.1Q VLAN id (untagged if not given)")
    f.add_argument("--pcp", type=int, default=0, help="802.1Q priority (default 0)")
    f.add_argument("--src-ip", default="198.18.0.1")
    f.add_argument("--dst-ip", default="198.18.0.2")
    f.add_argument("--src-port", default="1024")
    f.add_argument("--dst-port", default="1024")
    o = p.add_argument_group("output")
    o.add_argument("--interval", type=float, default=1.0, help="seconds between live lines (0: none)")
    o.add_argument("--drain", type=float, default=1.0, help="seconds to wait for stragglers after sending")
    o.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    add_port_options(p)
    return p


def frame_spec(args: argparse.Namespace) -> FrameSpec:
    spec = FrameSpec(
        dst_mac=parse_mac_span(args.dst_mac),
        src_mac=parse_mac_span(args.src_mac),
        dst_ip=parse_ip_span(args.dst_ip),
        src_ip=parse_ip_span(args.src_ip),
        dst_port=parse_port_span(args.dst_port),
        src_port=parse_port_span(args.src_port),
        size=parse_size_span(args.size),
        vlan=args.vlan,
        pcp=args.pcp,
    )
    spec.check()
    return spec


class Generator:
    """The send/receive loop: one thread, one burst of each per pass, no Python per packet."""

    def __init__(
        self,
        ports: ToolPorts,
        tx: Port | None,
        rx: Port | None,
        builder: FrameBuilder,
        rate: Rate,
        count: int | None,
        duration: float | None,
        burst: int,
        drain: float,
        interval: float,
        out: TextIO,
    ) -> None:
        self.pool = ports.pool
        self.tx, self.rx = tx, rx
        self.builder = builder
        self.pps = rate.packets_per_second(builder.mean_size())
        self.count, self.duration = count, duration
        self.burst, self.drain, self.interval = burst, drain, interval
        self.out = out
        self.stop_requested = False
        self.sent = 0  # frames the port accepted
        self.sent_bytes = 0
        self.offered = 0  # frames built (sequence numbers used)
        self.tx_drop = 0
        self.retries = 0
        self.rx_stats = RxStats()
        self._pending = np.empty(0, np.uint32)
        self.elapsed = 0.0

    # -- transmit ------------------------------------------------------------------------------

    def _tx_target(self, t: float) -> int:
        """How many frames should have been offered by ``t`` seconds into the run."""
        target = self.count if self.count is not None else 1 << 62
        if self.pps is not None:
            target = min(target, int(self.pps * t) + 1)
        return target

    def _send(self, t: float) -> int:
        assert self.tx is not None
        pool = self.pool
        if len(self._pending):
            bufs = self._pending
        else:
            n = min(self.burst, self._tx_target(t) - self.offered)
            if n <= 0:
                return 0
            bufs = pool.alloc(n)
            if len(bufs) == 0:
                return 0
            n = len(bufs)
            seqs = np.arange(self.offered, self.offered + n, dtype=np.uint64)
            self.builder.fill(pool.data, pool.lengths, bufs, seqs, time.time_ns())
            pool.stamps[bufs] = time.time_ns()
            self.offered += n
        nbytes = pool.lengths[bufs]
        took = self.tx.tx_burst(bufs)
        self.tx.counters[TX] += took
        self.sent += took
        self.sent_bytes += int(nbytes[:took].sum())
        # What the port refused (a full ring, a busy socket) is offered again next pass, in order:
        # a generator waits for its port rather than dropping its own frames.
        self._pending = bufs[took:]
        if len(self._pending):
            self.retries += 1
        return took

    def _abandon_pending(self) -> None:
        if len(self._pending):
            self.tx_drop += len(self._pending)
            if self.tx is not None:
                self.tx.counters[TX_DROP] += len(self._pending)
            self.pool.free(self._pending)
            self._pending = np.empty(0, np.uint32)

    # -- receive -------------------------------------------------------------------------------

    def _receive(self) -> int:
        assert self.rx is not None
        bufs = self.rx.rx_burst(RX_BURST)
        n = len(bufs)
        if n == 0:
            return 0
        now = time.time_ns()
        self.rx.counters[RX] += n
        pool = self.pool
        sig = read_signatures(pool.data, pool.lengths, bufs)
        self.rx_stats.add(sig.seqs, sig.sent_ns, now, int(pool.lengths[bufs].sum()), sig.others)
        pool.free(bufs)
        return n

    # -- the loop ------------------------------------------------------------------------------

    def _tx_finished(self, t: float) -> bool:
        if self.tx is None:
            return True
        if self.duration is not None and t >= self.duration:
            return True
        return self.count is not None and self.sent >= self.count and not len(self._pending)

    def _rx_finished(self, t: float, tx_done_at: float | None) -> bool:
        if self.rx is None:
            return True
        if self.tx is None:  # receive only
            if self.count is not None and self.rx_stats.unique >= self.count:
                return True
            return self.duration is not None and t >= self.duration
        if self.rx_stats.unique >= self.sent:
            return True
        return tx_done_at is not None and t - tx_done_at >= self.drain

    def run(self) -> None:
        next_report = self.interval if self.interval > 0 else math.inf
        last = (0.0, 0, 0, 0)
        tx_done_at: float | None = None
        if self.rx is not None:
            self._receive()  # opens the receive side now, so "ready" means ready
        poller = None
        if self.rx is not None and (fd := self.rx.fileno()) is not None:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
        print(f"spp-pktgen: ready ({self._ports_text()})", file=sys.stderr, flush=True)
        start = time.monotonic()
        while not self.stop_requested:
            t = time.monotonic() - start
            moved = 0
            if tx_done_at is None:
                if self._tx_finished(t):
                    self._abandon_pending()
                    tx_done_at = t
                else:
                    moved += self._send(t)
            if self.rx is not None:
                moved += self._receive()
            if t >= next_report:
                last = self._report(t, last)
                next_report += self.interval
            if tx_done_at is not None and self._rx_finished(t, tx_done_at):
                break
            if moved == 0:
                self._idle(t, tx_done_at is None, poller)
        self._abandon_pending()
        self.elapsed = time.monotonic() - start

    def _ports_text(self) -> str:
        return ", ".join(f"{d} {p.uid}" for d, p in (("tx", self.tx), ("rx", self.rx)) if p is not None)

    def _idle(self, t: float, sending: bool, poller: select.poll | None) -> None:
        wait = 0.001
        if sending and self.pps is not None and not len(self._pending):
            due = (self.offered + 1) / self.pps - t  # when the next frame may go
            wait = min(max(due, 0.0), 0.001)
        elif sending:
            wait = 0.00005  # a full port: give the consumer the CPU
        if poller is not None and wait >= 0.001:
            poller.poll(1)
        elif wait > 0:
            time.sleep(wait)

    def _report(self, t: float, last: tuple[float, int, int, int]) -> tuple[float, int, int, int]:
        t0, sent0, rx0, lost0 = last
        dt = max(t - t0, 1e-9)
        rx = self.rx_stats.received
        lost = self.rx_stats.lost(None)
        parts = [f"[{t:7.2f}s]"]
        if self.tx is not None:
            parts.append(f"tx {(self.sent - sent0) / dt:12,.0f} pps")
        if self.rx is not None:
            parts.append(f"rx {(rx - rx0) / dt:12,.0f} pps")
            parts.append(f"drop {(lost - lost0) / dt:10,.0f} pps")
        parts.append(f"| total tx {self.sent:,} rx {rx:,} lost {lost:,}")
        print("  ".join(parts), file=self.out, flush=True)
        return (t, self.sent, rx, lost)

    # -- the result ----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        secs = max(self.elapsed, 1e-9)
        result: dict[str, Any] = {"elapsed_s": round(self.elapsed, 3)}
        if self.tx is not None:
            result["tx"] = {
                "port": str(self.tx.uid),
                "frames": self.sent,
                "bytes": self.sent_bytes,
                "dropped": self.tx_drop,
                "pps": round(self.sent / secs, 1),
                "bit_per_s": round(self.sent_bytes * 8 / secs, 1),
            }
        if self.rx is not None:
            rx = self.rx_stats.summary(self.sent if self.tx is not None else None)
            rx["port"] = str(self.rx.uid)
            rx["pps"] = round(rx["received"] / secs, 1)
            result["rx"] = rx
        return result


def format_summary(s: dict[str, Any]) -> str:
    lines = []
    if "tx" in s:
        t = s["tx"]
        lines.append(
            f"tx {t['port']}: {t['frames']:,} frames, {t['bytes']:,} bytes in {s['elapsed_s']} s "
            f"({t['pps']:,.0f} pps, {t['bit_per_s'] / 1e6:,.2f} Mbit/s), {t['dropped']} not sent"
        )
    if "rx" in s:
        r = s["rx"]
        lines.append(
            f"rx {r['port']}: {r['received']:,} frames ({r['unique']:,} unique), lost {r['lost']:,}, "
            f"duplicates {r['duplicates']:,}, reordered {r['reordered']:,}, "
            f"other frames {r['other_frames']:,}"
        )
        lat = r["latency"]
        if lat:
            lines.append(
                f"latency: min {lat['min_us']} us, median {lat['median_us']} us, p99 {lat['p99_us']} us, "
                f"max {lat['max_us']} us ({lat['samples']:,} samples)"
            )
    return "\n".join(lines)


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.tx and not args.rx:
        print("spp-pktgen: error: give --tx PORT, --rx PORT or both", file=sys.stderr)
        return 2
    live = sys.stderr if args.json else sys.stdout
    try:
        spec = frame_spec(args)
        rate = parse_rate(args.rate)
        if args.burst < 1 or args.burst > 1024:
            raise FieldError(f"invalid burst {args.burst} (1..1024)")
        for name in ("count", "duration"):
            value = getattr(args, name)
            if value is not None and value <= 0:
                raise FieldError(f"invalid --{name} {value}: must be positive")
        tx_uid = parse_port(args.tx) if args.tx else None
        rx_uid = parse_port(args.rx) if args.rx else None
        ports = ToolPorts.open(args, "pktgen")
    except (FieldError, ToolError) as e:
        print(f"spp-pktgen: error: {e}", file=sys.stderr)
        return 1
    try:
        try:
            tx = ports.port(tx_uid) if tx_uid else None
            rx = ports.port(rx_uid) if rx_uid else None
        except ToolError as e:
            print(f"spp-pktgen: error: {e}", file=sys.stderr)
            return 1
        gen = Generator(
            ports,
            tx,
            rx,
            FrameBuilder(spec),
            rate,
            args.count,
            args.duration,
            args.burst,
            args.drain,
            args.interval,
            live,
        )

        def on_signal(_signum: int, _frame: object) -> None:
            gen.stop_requested = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        gen.run()
        result = gen.summary()
    finally:
        ports.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_summary(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
