"""Port drivers, and :func:`open_port` which picks one by the UID's type.

=========  ==============================================  =====================
UID        what it is                                      module
=========  ==============================================  =====================
ring:N     shared-memory SPSC ring (zero copy)             :mod:`.ring`
phy:N      Linux interface via AF_PACKET (TPACKET_V3 rx,   :mod:`.phy`
           sendmmsg tx)
tap:N      TUN/TAP device, per file prefix (``vtapN``)     :mod:`.tap`
pcap:N     rx from /tmp/spp-rxN.pcap, tx to /tmp/spp-txN   :mod:`.pcap`
nullpmd:N  endless source, bottomless sink                 :mod:`.null`
vhost:N    vhost-user socket ``<dir>/sockN`` for a VM or   :mod:`.vhost`
           container (server, or client with
           --vhost-client)
virtio_user:N  our virtio-net driver on a vhost-user       :mod:`.virtio_user`
           socket (client of ``<dir>/sockN``)
=========  ==============================================  =====================
"""

from __future__ import annotations

from spp.engine.portid import PortId
from spp.engine.ports.base import Port, PortContext, PortError

__all__ = ["Port", "PortContext", "PortError", "open_port"]


def open_port(uid: PortId, ctx: PortContext) -> Port:
    """Open the device behind ``uid`` in this process. Raises :class:`PortError` with a reason."""
    if uid.queue and uid.type == "phy":
        raise PortError(f"{uid.display}: phy ports here have a single queue (nq 0)")
    if uid.type == "ring":
        from spp.engine.ports.ring import RingPort

        return RingPort(uid, ctx)
    if uid.type == "nullpmd":
        from spp.engine.ports.null import NullPort

        return NullPort(uid, ctx)
    if uid.type == "pcap":
        from spp.engine.ports.pcap import PcapPort

        return PcapPort(uid, ctx)
    if uid.type == "phy":
        from spp.engine.ports.phy import PhyPort

        return PhyPort(uid, ctx)
    if uid.type == "tap":
        from spp.engine.ports.tap import TapPort

        return TapPort(uid, ctx)
    if uid.type == "vhost":
        from spp.engine.ports.vhost import VhostPort

        return VhostPort(uid, ctx)
    if uid.type == "virtio_user":
        from spp.engine.ports.virtio_user import VirtioUserPort

        return VirtioUserPort(uid, ctx)
    raise PortError(f"{uid}: {uid.type} ports are not supported by this implementation")
