"""Port resource UIDs: ``TYPE:ID`` as SPP names ports (``phy:0``, ``ring:3``, ``phy:0nq1``).

One parser serves spp-ctl, the CLI and the processes, so a name that one accepts is accepted by all
and a bad one is refused everywhere with the same message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Every type SPP's spp-ctl knows. Which of them a given process can *open* is the driver
#: registry's business (:mod:`spp.engine.ports`), not the parser's.
PORT_TYPES = ("phy", "vhost", "ring", "pcap", "nullpmd", "tap", "memif", "pipe", "virtio_user")

_UID = re.compile(r"^(?P<type>[a-z][a-z_]*):(?P<num>\d+)(?:\s*nq\s*(?P<queue>\d+))?$")


class PortUidError(ValueError):
    """A port name that is not ``TYPE:ID`` with a known type and a decimal id."""


@dataclass(frozen=True, order=True)
class PortId:
    type: str
    num: int
    queue: int = 0

    def __str__(self) -> str:
        # The wire form: spp-ctl and the processes exchange ``phy:0nq1``; status shows ``phy:0 nq 1``.
        return f"{self.type}:{self.num}" + (f"nq{self.queue}" if self.queue else "")

    @property
    def display(self) -> str:
        return f"{self.type}:{self.num}" + (f" nq {self.queue}" if self.queue else "")

    @property
    def port(self) -> PortId:
        """The device this (port, queue) pair belongs to."""
        return PortId(self.type, self.num) if self.queue else self


def parse_port_uid(text: str, allowed: tuple[str, ...] = PORT_TYPES) -> PortId:
    """Parse ``phy:0``, ``ring:12``, ``phy:0nq1`` or ``phy:0 nq 1``; raise :class:`PortUidError`."""
    if not isinstance(text, str):
        raise PortUidError(f"port must be a string like 'ring:0', not {type(text).__name__}")
    m = _UID.match(text.strip())
    if not m:
        raise PortUidError(f"invalid port '{text}': expected TYPE:ID such as 'ring:0' or 'phy:1'")
    ptype = m["type"]
    if ptype not in allowed:
        raise PortUidError(
            f"invalid port '{text}': unknown type '{ptype}' (expected one of {', '.join(allowed)})"
        )
    queue = m["queue"]
    if queue is not None and ptype != "phy":
        raise PortUidError(f"invalid port '{text}': only phy ports have queues")
    return PortId(ptype, int(m["num"]), int(queue) if queue is not None else 0)
