"""The simplest Python relay there is: the floor under any Python forwarder's latency here.

    python bench/tools/py_relay.py IFACE_A IFACE_B [--cpu N]

Two plain AF_PACKET sockets receive (no ring, no virtio-net header, no fanout), two send-only
sockets with ``PACKET_QDISC_BYPASS`` transmit (as our phy port's do), and one loop busy-polls
both directions with ``recv_into`` and sends each frame with one ``send``: no pool, no counters,
no bursts, nothing a real panel needs. ``bench/latency.py``'s ``py-relay`` side runs it between
the same namespaces as the other forwarders, so what it adds over the Linux bridge is what the
interpreter and this machine's scheduling cost by themselves, next to what our nfv adds.

Runs until killed. Not a product: a measuring stick.
"""

from __future__ import annotations

import argparse
import os
import socket

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20


def open_pair(iface: str) -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    rx.bind((iface, 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    # Straight to the driver: the frame is not looped back to the receiving sockets either.
    tx.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    tx.bind((iface, 0))
    tx.setblocking(False)
    return rx, tx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("iface_a")
    ap.add_argument("iface_b")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    rx_a, tx_a = open_pair(args.iface_a)
    rx_b, tx_b = open_pair(args.iface_b)
    buf = bytearray(65536)
    view = memoryview(buf)
    directions = ((rx_a, tx_b), (rx_b, tx_a))
    refused = 0
    while True:
        for src, dst in directions:
            try:
                n = src.recv_into(buf)
            except BlockingIOError:
                continue
            try:
                dst.send(view[:n])
            except OSError:
                refused += 1  # a frame the other side would not take: counted, never retried


if __name__ == "__main__":
    main()
