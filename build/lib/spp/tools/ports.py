"""How the traffic tools get their ports: attached to a running instance, or standalone.

* **Attached** (``--file-prefix P``): the tool maps the segment of the primary started with that
  prefix, takes a free row of its process table (from the top, 127 down, so it does not collide
  with the secondary ids people pick) and opens ports exactly as a secondary does: ``ring:N``,
  ``phy:N`` (the primary's interfaces), ``tap:N``, ``pcap:N``, and whatever other type the driver
  registry (:func:`spp.engine.ports.open_port`) knows, such as ``vhost:N``. Ring counters land in
  the tool's row, so the primary's status shows its traffic.
* **Standalone** (no ``--file-prefix``): the tool creates a small private segment (its own buffer
  pool, no rings) named after its pid, with ``phy:N`` meaning the N-th ``--iface``, and removes it
  on exit.

Ports are named by their SPP resource id in both cases, so a port type added to the engine
is usable by the tools without changes here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass, field

from spp.engine import linux
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId, PortUidError, parse_port_uid
from spp.engine.ports import Port, PortContext, PortError, open_port
from spp.engine.shm import MAX_PROCS, PhyInfo, Segment, SegmentError, SegmentSpec, segment_path
from spp.processes.options import OptionError, parse_vdev


class ToolError(RuntimeError):
    """A tool cannot start: bad option, missing instance, port that will not open."""


def add_port_options(p: argparse.ArgumentParser) -> None:
    """The options every tool shares for finding and opening ports."""
    g = p.add_argument_group("where the ports come from")
    g.add_argument(
        "--file-prefix",
        help="attach to the running SPP instance with this file prefix (needed for ring ports)",
    )
    g.add_argument(
        "--iface",
        action="append",
        default=[],
        metavar="NAME",
        help="standalone: a Linux interface to use as the next phy:N (repeatable)",
    )
    g.add_argument(
        "--vdev",
        action="append",
        default=[],
        metavar="net_af_packetN,iface=NAME",
        help="standalone: like --iface, in DPDK's --vdev form",
    )
    g.add_argument("--pcap-dir", default="/tmp", help="where pcap:N files are (default %(default)s)")
    g.add_argument(
        "--tap-name",
        action="append",
        default=[],
        metavar="tap:N=NAME",
        help="interface name of a tap:N port (default vtapN)",
    )
    g.add_argument("--vhost-client", action="store_true", help="vhost-user ports connect as client")
    g.add_argument("--vhost-dir", help="directory of vhost:N / virtio_user:N sockets sockN (default /tmp)")
    g.add_argument("--nb-bufs", type=int, default=8192, help="standalone: buffers in the private pool")


def parse_port(text: str) -> PortId:
    try:
        return parse_port_uid(text)
    except PortUidError as e:
        raise ToolError(str(e)) from None


@dataclass
class ToolPorts:
    """The segment, pool and ports of one tool process. Close it to give everything back."""

    seg: Segment
    pool: BufferPool
    ctx: PortContext
    private: bool
    client_id: int
    ports: dict[PortId, Port] = field(default_factory=dict)

    @classmethod
    def open(cls, args: argparse.Namespace, kind: str) -> ToolPorts:
        options = {"pcap_dir": args.pcap_dir}
        if args.vhost_dir:
            if not os.path.isdir(args.vhost_dir):
                raise ToolError(f"--vhost-dir {args.vhost_dir}: no such directory")
            options["vhost-dir"] = args.vhost_dir
        for item in args.tap_name:
            uid, sep, name = item.partition("=")
            if not sep or not name:
                raise ToolError(f"--tap-name {item}: expected tap:N=NAME")
            options[str(parse_port(uid))] = name
        if args.file_prefix:
            if args.iface or args.vdev:
                raise ToolError(
                    "--iface/--vdev are for standalone use; with --file-prefix, phy:N is the primary's"
                )
            try:
                seg = Segment.attach(args.file_prefix)
            except SegmentError as e:
                raise ToolError(str(e)) from None
            try:
                client_id = _claim_free_row(seg, kind)
            except ToolError:
                seg.close()
                raise
            private = False
        else:
            phys = _standalone_phys(args.iface, args.vdev)
            spec = SegmentSpec(
                prefix=f"{kind}-{os.getpid()}",
                nb_bufs=args.nb_bufs,
                nb_rings=0,
                phys=phys,
                primary_pid=os.getpid(),
            )
            try:
                seg = Segment.create(spec)
            except (OSError, SegmentError) as e:
                raise ToolError(f"cannot create the private buffer pool: {e}") from None
            client_id = 0
            private = True
        pool = BufferPool(seg)
        ctx = PortContext(
            seg=seg, pool=pool, client_id=client_id, vhost_client=args.vhost_client, options=options
        )
        return cls(seg, pool, ctx, private, client_id)

    def port(self, uid: PortId) -> Port:
        """Open ``uid`` (once; asking again returns the same port)."""
        if uid in self.ports:
            return self.ports[uid]
        if uid.type == "ring" and self.private:
            raise ToolError(f"{uid}: ring ports live in a running instance; give its --file-prefix")
        try:
            port = open_port(uid, self.ctx)
        except PortError as e:
            raise ToolError(str(e)) from None
        self.ports[uid] = port
        return port

    def close(self) -> None:
        for port in self.ports.values():
            with contextlib.suppress(Exception):
                port.close()
        self.ports.clear()
        self.pool.close()
        if self.private:
            self.seg.unlink()
        else:
            self.seg.leave(self.client_id)  # the last process out removes the segment
        self.seg.close()


def _claim_free_row(seg: Segment, kind: str) -> int:
    for client_id in range(MAX_PROCS - 1, 0, -1):
        try:
            seg.claim_process_slot(client_id, kind)  # refused while a live process holds the row
        except SegmentError:
            continue
        return client_id
    raise ToolError("the instance's process table is full")


def _standalone_phys(ifaces: list[str], vdevs: list[str]) -> list[PhyInfo]:
    names = list(ifaces)
    for vdev in vdevs:
        try:
            name, params = parse_vdev(vdev)
        except OptionError as e:
            raise ToolError(str(e)) from None
        if not name.startswith(("net_af_packet", "eth_af_packet")) or "iface" not in params:
            raise ToolError(f"--vdev {vdev}: only net_af_packetN,iface=NAME devices are supported")
        names.append(params["iface"])
    phys = []
    for name in names:
        try:
            mac = linux.get_mac(name)
            linux.set_link_up(name)
        except (OSError, ValueError):
            raise ToolError(f"interface '{name}' not found") from None
        phys.append(PhyInfo(iface=name, mac=mac))
    return phys


def private_segment_path(kind: str, pid: int) -> str:
    """Where a standalone tool's pool lives (for tests and clean-up of a killed tool)."""
    return str(segment_path(f"{kind}-{pid}"))
