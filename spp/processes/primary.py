"""spp_primary: owner of the shared resources, optional forwarder, launcher of secondaries.

``spp-primary [EAL] -- -n NUM_RINGS [-p PORTMASK] -s HOST:5555 [--iface NAME ...]``

It creates the shared segment (pool, rings, counters, process table) and the ``phy`` ports:
Linux interfaces named by ``--vdev net_af_packetN,iface=NAME`` (DPDK's style) or ``--iface NAME``,
of which ``-p PORTMASK`` selects. ``--vdev net_pcapN,rx_pcap=PATH,tx_pcap=PATH`` names the files of
this instance's ``pcap:N`` port (SPP's secondaries create ``net_pcapN`` for ``pcap:N``; without it
they are ``/tmp/spp-rxN.pcap`` and ``/tmp/spp-txN.pcap``). With two or more lcores it also runs
SPP's primary forwarder, which has spp_nfv's patch table. Counters of phy and ring ports are the
sum of every process's row in the segment, less what was there at the last ``clear``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from spp.engine import linux
from spp.engine.patchpanel import PatchPanel
from spp.engine.portid import PortId, PortUidError, parse_port_uid
from spp.engine.ports import PortContext
from spp.engine.ring import HEAD as RING_HEAD
from spp.engine.ring import TAIL as RING_TAIL
from spp.engine.shm import (
    KIND_NAMES,
    P_KIND,
    RX,
    RX_BYTES,
    RX_DROP,
    TX,
    TX_BYTES,
    TX_DROP,
    PhyInfo,
    Segment,
    SegmentError,
    SegmentSpec,
    counter_fields,
    sweep_stale,
)
from spp.engine.worker import DEFAULT_BURST, SPIN_SECONDS, Worker
from spp.instance import log_dir
from spp.processes.base import SppProcess, add_busy_poll_option, setup_logging
from spp.processes.commands import PANEL_COMMANDS, Reply, failed, run_panel_command, succeeded
from spp.processes.launcher import REGISTER_TIMEOUT, Launcher, LaunchError
from spp.processes.options import (
    OptionError,
    is_virtio_vdev,
    parse_eal,
    parse_server,
    parse_vdev,
    port_options,
    split_eal,
)

log = logging.getLogger(__name__)

PRIMARY_ADDABLE = ("ring", "vhost", "pcap", "nullpmd", "tap", "virtio_user")


class Primary(SppProcess):
    name = "spp_primary"

    def __init__(
        self,
        seg: Segment,
        host: str,
        port: int,
        lcores: list[int],
        launcher: Launcher,
        burst: int = DEFAULT_BURST,
        options: dict[str, str] | None = None,
        spin: float = SPIN_SECONDS,
    ) -> None:
        super().__init__(seg, host, port, 0, "primary")
        self.lcores = lcores
        self.launcher = launcher
        self.nb_phys = len(seg.spec.phys)
        # What ``clear`` saw, per process row: counters are reported relative to it.
        self._phy_base = np.zeros(seg.phy_stats[:, : self.nb_phys].shape, np.int64)
        self._ring_base = np.zeros(seg.ring_stats[:, : seg.spec.nb_rings].shape, np.int64)
        self.pipes: dict[int, tuple[int, int]] = {}
        # The port table exists with or without a forwarder lcore: SPP's primary adds and deletes
        # ports (``add ring:N``) in either mode, and scripts rely on it. Only ``forward`` needs
        # the worker, which runs on the second lcore.
        self.has_forwarder = len(lcores) >= 2
        self.worker = Worker(
            self.pool,
            name="primary-fwd",
            burst=burst,
            lcore=lcores[1] if self.has_forwarder else None,
            spin=spin,
        )
        ctx = PortContext(seg=seg, pool=self.pool, client_id=0, options=dict(options or {}))
        self.panel = PatchPanel(ctx, self.worker, PRIMARY_ADDABLE)
        for n in range(self.nb_phys):
            self.panel.register(PortId("phy", n))
        if self.has_forwarder:
            self.worker.start()

    # -- commands ------------------------------------------------------------------------------

    def handle(self, tokens: list[str]) -> Reply | str:
        cmd = tokens[0]
        if cmd == "status":
            return self.status()
        if cmd == "clear":
            self._phy_base = self.seg.phy_stats[:, : self.nb_phys].astype(np.int64)
            self._ring_base = self.seg.ring_stats[:, : self.seg.spec.nb_rings].astype(np.int64)
            return succeeded(cmd)
        if cmd == "launch":
            return self.launch(tokens)
        if cmd == "launch_status":
            return self.launch_status(tokens)
        if cmd in ("add", "del") and len(tokens) > 1 and tokens[1].startswith("pipe:"):
            return self.pipe_command(tokens)
        if cmd == "flow":
            return {
                "result": "error",
                "message": "Flow rules need NIC hardware offload, which this build has not",
            }
        if cmd == "forward" and not self.has_forwarder:
            return failed(
                cmd,
                f"no forwarder lcore: the primary runs on lcore {self.lcores[0]} only; start it with "
                "two or more lcores (e.g. -l 0,1) to forward",
            )
        if cmd in PANEL_COMMANDS:
            return run_panel_command(self.panel, tokens)
        return failed(cmd, f"unknown command '{cmd}'")

    def launch(self, tokens: list[str]) -> Reply:
        """Spawn a secondary and answer at once; ``launch_status ID`` tells what became of it."""
        if len(tokens) < 3:
            return failed("launch", "usage: launch ID PROC_NAME [EAL options] -- [app options]")
        try:
            client_id = int(tokens[1])
        except ValueError:
            return failed("launch", f"invalid secondary id '{tokens[1]}'")
        try:
            pid = self.launcher.launch(client_id, tokens[2], tokens[3:])
        except LaunchError as e:
            return failed("launch", str(e))
        return succeeded("launch", client_id=client_id, pid=pid)

    def launch_status(self, tokens: list[str]) -> Reply:
        if len(tokens) != 2 or not tokens[1].isdigit():
            return failed("launch_status", "usage: launch_status ID")
        return succeeded("launch_status", **self.launcher.status(int(tokens[1])))

    def pipe_command(self, tokens: list[str]) -> Reply:
        """``add pipe:N ring:A ring:B`` / ``del pipe:N``: SPP's pipe, the pair of rings through which
        a third-party application joins the panel (it receives from ring A and sends to ring B)."""
        cmd, name = tokens[0], tokens[1]
        try:
            pid = parse_port_uid(name, ("pipe",))
            if cmd == "del":
                if len(tokens) != 2:
                    return failed(cmd, "usage: del pipe:N", port=name)
                if self.pipes.pop(pid.num, None) is None:
                    return failed(cmd, f"port {pid} is not added", port=name)
                return succeeded(cmd, port=str(pid))
            if len(tokens) != 4:
                return failed(cmd, "usage: add pipe:N ring:RX ring:TX", port=name)
            rx, tx = (parse_port_uid(t, ("ring",)) for t in tokens[2:])
        except PortUidError as e:
            return failed(cmd, str(e), port=name)
        if pid.num in self.pipes:
            return failed(cmd, f"port {pid} is already added", port=name)
        for ring in (rx, tx):
            if ring.num >= self.seg.spec.nb_rings:
                return failed(
                    cmd,
                    f"{ring} does not exist: the primary created {self.seg.spec.nb_rings} rings",
                    port=name,
                )
        self.pipes[pid.num] = (rx.num, tx.num)
        return succeeded(cmd, port=str(pid))

    # -- status --------------------------------------------------------------------------------

    def _phy_rows(self) -> np.ndarray:
        """``[process][phy][counter]`` since the last ``clear`` (int64, never below 0)."""
        return np.maximum(self.seg.phy_stats[:, : self.nb_phys].astype(np.int64) - self._phy_base, 0)

    def _ring_rows(self) -> np.ndarray:
        rings = self.seg.spec.nb_rings
        return np.maximum(self.seg.ring_stats[:, :rings].astype(np.int64) - self._ring_base, 0)

    def _ring_fill(self, num: int) -> int:
        ctl = self.seg.ring_views(num)[0]
        return max(0, int(ctl[RING_HEAD]) - int(ctl[RING_TAIL]))

    def process_stats(self, phy_rows: np.ndarray, ring_rows: np.ndarray) -> list[dict[str, Any]]:
        """Not in SPP: each process's own share of the phy and ring counters (the rows the
        totals are summed from), for rows that counted something; ``/metrics`` labels by it."""
        out: list[dict[str, Any]] = []
        for kind, rows in (("phy", phy_rows), ("ring", ring_rows)):
            for cid, num in zip(*np.nonzero(rows.any(axis=2)), strict=True):
                c = rows[cid, num]
                out.append(
                    {
                        "process": KIND_NAMES.get(int(self.seg.procs[cid, P_KIND]), "process"),
                        "client-id": int(cid),
                        "port": f"{kind}:{num}",
                        **counter_fields(c),
                    }
                )
        out.sort(key=lambda e: (e["client-id"], e["port"]))
        return out

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"master-lcore": self.lcores[0], "lcores": sorted(self.lcores)}
        if self.has_forwarder:
            out["forwarder"] = {
                "status": "running" if self.panel.forwarding else "idling",
                "ports": self.panel.port_names(),
                "patches": self.panel.patch_list(),
            }
        phy_rows, ring_rows = self._phy_rows(), self._ring_rows()
        phy = phy_rows.sum(axis=0)
        out["phy_ports"] = [
            {
                "id": n,
                "eth": info.mac.lower(),
                "rx": int(phy[n, RX]),
                "tx": int(phy[n, TX]),
                "tx_drop": int(phy[n, TX_DROP]),
                "rx_drop": int(phy[n, RX_DROP]),
                "nof_queues": {"rx": 1, "tx": 1},
                "flow": [],
                "iface": info.iface,
                # Not in SPP: bytes of what rx and tx counted (frames without FCS).
                "rx_bytes": int(phy[n, RX_BYTES]),
                "tx_bytes": int(phy[n, TX_BYTES]),
            }
            for n, info in enumerate(self.seg.spec.phys)
        ]
        ring = ring_rows.sum(axis=0)
        out["ring_ports"] = [
            {
                "id": n,
                "rx": int(ring[n, RX]),
                "rx_drop": int(ring[n, RX_DROP]),
                "tx": int(ring[n, TX]),
                "tx_drop": int(ring[n, TX_DROP]),
                "rx_bytes": int(ring[n, RX_BYTES]),
                "tx_bytes": int(ring[n, TX_BYTES]),
                # Not in SPP: packets waiting in the ring now, of how many slots.
                "fill": self._ring_fill(n),
                "capacity": self.seg.spec.ring_size,
            }
            for n in range(self.seg.spec.nb_rings)
        ]
        out["pipes"] = [{"id": n, "rx": rx, "tx": tx} for n, (rx, tx) in sorted(self.pipes.items())]
        out["pool"] = {
            "size": self.seg.spec.nb_bufs,
            "free": int(self.seg.pool_ctl[0]),
            # Not in SPP: the large buffers (jumbo frames, GSO aggregates up to 64 KiB).
            "large_size": self.seg.spec.nb_large,
            "large_free": int(self.seg.pool_ctl[1]),
        }
        out["process_stats"] = self.process_stats(phy_rows, ring_rows)
        return out

    def shutdown(self) -> None:
        self.panel.close()
        self.worker.stop()
        self.launcher.stop()
        super().shutdown()  # the segment stays while secondaries use it (the last one out removes it)


# -- start-up ---------------------------------------------------------------------------------


PCAP_VDEV_PREFIXES = ("net_pcap", "eth_pcap")
PCAP_VDEV_KEYS = {"rx_pcap": "rx", "tx_pcap": "tx"}


def collect_pcaps(vdevs: list[str]) -> dict[str, dict[str, str]]:
    """``net_pcapN,rx_pcap=PATH,tx_pcap=PATH`` -> ``{"N": {"rx": abs PATH, "tx": abs PATH}}``.

    Paths are made absolute here: the secondaries that open them may run in other directories.
    """
    pcaps: dict[str, dict[str, str]] = {}
    for vdev in vdevs:
        name, params = parse_vdev(vdev)
        prefix = next((p for p in PCAP_VDEV_PREFIXES if name.startswith(p)), None)
        if prefix is None:
            continue
        num = name[len(prefix) :]
        if not (num.isascii() and num.isdigit()) or len(num) > 4:
            raise OptionError(f"--vdev {vdev}: expected {prefix}N with N the pcap port number")
        unknown = sorted(set(params) - set(PCAP_VDEV_KEYS))
        if unknown:
            raise OptionError(f"--vdev {vdev}: unknown key(s) {', '.join(unknown)} (rx_pcap, tx_pcap)")
        files: dict[str, str] = {}
        for key, side in PCAP_VDEV_KEYS.items():
            if key in params:
                path = params[key]
                if not path or "\0" in path:
                    raise OptionError(f"--vdev {vdev}: {key} needs a file path")
                files[side] = os.path.abspath(path)
        if files.get("rx") is not None and files.get("rx") == files.get("tx"):
            raise OptionError(f"--vdev {vdev}: rx_pcap and tx_pcap must be different files")
        if str(int(num)) in pcaps:
            raise OptionError(f"--vdev {vdev}: pcap port {int(num)} is already given")
        pcaps[str(int(num))] = files
    return pcaps


def collect_phys(ifaces: list[str], vdevs: list[str], portmask: str | None) -> list[PhyInfo]:
    """The phy ports, in DPDK's ethdev order (plain interfaces, then vdevs), filtered by -p."""
    candidates: list[str] = list(ifaces)
    for vdev in vdevs:
        name, params = parse_vdev(vdev)
        if name.startswith(PCAP_VDEV_PREFIXES):
            continue  # pcap:N's files, see collect_pcaps
        if name.startswith(("net_af_packet", "eth_af_packet")):
            if "iface" not in params:
                raise OptionError(f"--vdev {vdev}: af_packet needs iface=NAME")
            candidates.append(params["iface"])
        elif not is_virtio_vdev(name):  # vhost and virtio-user vdevs name sockets; see port_options
            raise OptionError(
                f"--vdev {vdev}: supported are net_af_packetN,iface=NAME, net_pcapN,rx_pcap=PATH,"
                "tx_pcap=PATH, eth_vhostN,iface=PATH and net_virtio_userN,path=PATH"
            )
    if portmask is not None:
        try:
            mask = int(portmask, 16)
        except ValueError:
            raise OptionError(f"invalid portmask '{portmask}' (expected hex, e.g. 0x03)") from None
        if mask >> len(candidates):
            log.warning(
                "portmask %s selects ports beyond the %d interfaces given; ignored", portmask, len(candidates)
            )
        candidates = [c for i, c in enumerate(candidates) if mask >> i & 1]
    phys = []
    for iface in candidates:
        try:
            mac = linux.get_mac(iface)
        except OSError:
            raise OptionError(f"interface '{iface}' not found") from None
        linux.set_link_up(iface)
        # SPP's NIC ports are promiscuous. Leave the interface as we found it when we exit.
        was_promisc = linux.is_promiscuous(iface)
        if not was_promisc:
            linux.set_promiscuous(iface, True)
        phys.append(PhyInfo(iface=iface, mac=mac, set_promisc=not was_promisc))
    return phys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # an option is spelt out or refused, never guessed
        prog="spp-primary",
        description="SPP primary: shared resources, phy ports, forwarder, launcher",
        usage="spp-primary [EAL options] -- -n NUM_RINGS [-p PORTMASK] -s HOST:PORT [--iface NAME ...]",
    )
    p.add_argument("-n", "--num-rings", type=int, required=True, help="number of ring ports ring:0..N-1")
    p.add_argument("-p", "--portmask", help="hex mask selecting the phy ports among the interfaces given")
    p.add_argument("-s", "--server", default="127.0.0.1:5555", help="spp-ctl address for the primary")
    p.add_argument(
        "--iface",
        action="append",
        default=[],
        help="a Linux interface to use as the next phy port (repeatable, or comma-separated)",
    )
    p.add_argument("--disp-stats", action="store_true", help="accepted for compatibility; no forwarder then")
    p.add_argument(
        "--port-num",
        nargs=5,
        action="append",
        metavar=("N", "rxq", "R", "txq", "T"),
        help="accepted for compatibility; phy ports have one queue here",
    )
    p.add_argument(
        "--ring-size", type=int, default=1024, help="slots per ring, a power of two (default %(default)s)"
    )
    p.add_argument(
        "--nb-bufs", type=int, default=0, help="packet buffers in the pool (default: by ring count)"
    )
    p.add_argument(
        "--nb-large",
        type=int,
        default=512,
        help="large buffers (66 KiB each) for jumbo frames and GSO aggregates (default %(default)s)",
    )
    p.add_argument(
        "--burst", type=int, default=DEFAULT_BURST, help="forwarder burst size (default %(default)s)"
    )
    add_busy_poll_option(p, "the forwarder")
    p.add_argument(
        "--log-dir",
        help="where launched secondaries log (default /tmp/spp-log, or /tmp/spp-log-PREFIX for a "
        "--file-prefix other than spp)",
    )
    p.add_argument(
        "--launch-timeout",
        type=float,
        default=REGISTER_TIMEOUT,
        help="seconds a launched secondary gets to register before it is killed (default %(default)s)",
    )
    p.add_argument("--vhost-dir", help="directory of vhost:N sockets sockN (default /tmp)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    eal_args, app_args = split_eal(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(app_args)
    setup_logging("spp_primary", args.log_level)
    try:
        eal = parse_eal(eal_args)
        host, port = parse_server(args.server, 5555)
        if not 0 < args.num_rings < 1024:
            raise OptionError(f"-n {args.num_rings}: number of rings must be 1..1023")
        if not 0 <= args.nb_large <= 65536:
            raise OptionError(f"--nb-large {args.nb_large}: must be 0..65536")
        if args.ring_size < 2 or args.ring_size & (args.ring_size - 1):
            raise OptionError(f"--ring-size {args.ring_size}: must be a power of two")
        ifaces = [i for arg in args.iface for i in arg.split(",") if i]
        pcaps = collect_pcaps(eal.vdevs)
        phys = collect_phys(ifaces, eal.vdevs, args.portmask)
        options = port_options(eal.vdevs, args.vhost_dir)
        nb_bufs = args.nb_bufs or max(16384, (args.num_rings + len(phys)) * 2 * args.ring_size + 8192)
        spec = SegmentSpec(
            prefix=eal.file_prefix,
            nb_bufs=nb_bufs,
            nb_large=args.nb_large,
            nb_rings=args.num_rings,
            ring_size=args.ring_size,
            phys=phys,
            primary_pid=os.getpid(),
            pcaps=pcaps,
        )
        for stale in sweep_stale():
            log.info("removed %s: every process that used it had exited", stale)
        seg, adopted = Segment.open_for_primary(spec)
    except (OptionError, SegmentError) as e:
        print(f"spp-primary: error: {e}", file=sys.stderr)
        return 1
    lcores = eal.lcores
    if args.disp_stats:
        lcores = lcores[:1]  # SPP: --disp-stats replaces the forwarder by a monitor
    launcher = Launcher(
        seg,
        eal.file_prefix,
        Path(args.log_dir) if args.log_dir else log_dir(eal.file_prefix),
        args.launch_timeout,
    )
    primary = Primary(
        seg, host, port, lcores, launcher, args.burst, options, spin=args.busy_poll_us / 1_000_000
    )
    if adopted:
        log.warning(
            "took over the segment %s of a primary that had gone; its secondaries %s keep running",
            seg.path,
            [f"{kind} {cid}" for cid, _, kind in seg.live_processes() if cid],
        )
    log.info(
        "file prefix %s: %d rings of %d, %d buffers, phy ports %s, forwarder %s",
        eal.file_prefix,
        args.num_rings,
        args.ring_size,
        nb_bufs,
        [p.iface for p in phys],
        "on" if primary.has_forwarder else "off",
    )
    return primary.run()


if __name__ == "__main__":
    sys.exit(main())
