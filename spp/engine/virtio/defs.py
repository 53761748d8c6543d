"""Numbers from the virtio 1.x and vhost-user specifications (facts, written down once)."""

from __future__ import annotations

import numpy as np

from spp.engine.offload import CAN_CSUM, CAN_ECN, CAN_TSO4, CAN_TSO6, CAN_USO

# -- virtio feature bits (virtio 1.x §5.1.3, §6) ---------------------------------------------
NET_F_CSUM = 0
NET_F_GUEST_CSUM = 1
NET_F_GUEST_TSO4 = 7
NET_F_GUEST_TSO6 = 8
NET_F_GUEST_ECN = 9
NET_F_GUEST_UFO = 10
NET_F_HOST_TSO4 = 11
NET_F_HOST_TSO6 = 12
NET_F_HOST_ECN = 13
NET_F_MRG_RXBUF = 15
NET_F_STATUS = 16
F_NOTIFY_ON_EMPTY = 24
F_ANY_LAYOUT = 27
RING_F_INDIRECT_DESC = 28
RING_F_EVENT_IDX = 29
USER_F_PROTOCOL_FEATURES = 30
F_VERSION_1 = 32
NET_F_GUEST_USO4 = 54
NET_F_GUEST_USO6 = 55
NET_F_HOST_USO = 56

#: the offload bits, as a device offers them: checksums both ways, TCP (and ECN-marked TCP) and
#: UDP aggregates both ways. UFO (GUEST_UFO/HOST_UFO: IP fragmentation) is not offered: no kernel
#: makes it any more and the engine refuses its gso type.
NET_OFFLOADS = (
    1 << NET_F_CSUM
    | 1 << NET_F_GUEST_CSUM
    | 1 << NET_F_GUEST_TSO4
    | 1 << NET_F_GUEST_TSO6
    | 1 << NET_F_GUEST_ECN
    | 1 << NET_F_HOST_TSO4
    | 1 << NET_F_HOST_TSO6
    | 1 << NET_F_HOST_ECN
    | 1 << NET_F_GUEST_USO4
    | 1 << NET_F_GUEST_USO6
    | 1 << NET_F_HOST_USO
)

# -- vhost-user protocol feature bits ---------------------------------------------------------
PROTOCOL_F_MQ = 0
PROTOCOL_F_REPLY_ACK = 3
PROTOCOL_F_RESET_DEVICE = 13

# -- vhost-user requests (front-end -> back-end) ----------------------------------------------
GET_FEATURES = 1
SET_FEATURES = 2
SET_OWNER = 3
RESET_OWNER = 4
SET_MEM_TABLE = 5
SET_LOG_BASE = 6
SET_LOG_FD = 7
SET_VRING_NUM = 8
SET_VRING_ADDR = 9
SET_VRING_BASE = 10
GET_VRING_BASE = 11
SET_VRING_KICK = 12
SET_VRING_CALL = 13
SET_VRING_ERR = 14
GET_PROTOCOL_FEATURES = 15
SET_PROTOCOL_FEATURES = 16
GET_QUEUE_NUM = 17
SET_VRING_ENABLE = 18
SEND_RARP = 19
NET_SET_MTU = 20
GET_CONFIG = 24
SET_CONFIG = 25
RESET_DEVICE = 34
GET_MAX_MEM_SLOTS = 36
SET_STATUS = 39
GET_STATUS = 40

REQUEST_NAMES = {
    v: k
    for k, v in globals().items()
    if k.isupper() and isinstance(v, int) and k.startswith(("GET_", "SET_"))
} | {
    RESET_OWNER: "RESET_OWNER",
    SEND_RARP: "SEND_RARP",
    NET_SET_MTU: "NET_SET_MTU",
    RESET_DEVICE: "RESET_DEVICE",
}

#: requests whose answer is a message of their own (REPLY_ACK adds nothing to them)
REPLYING = frozenset(
    {
        GET_FEATURES,
        GET_PROTOCOL_FEATURES,
        GET_VRING_BASE,
        GET_QUEUE_NUM,
        GET_CONFIG,
        GET_MAX_MEM_SLOTS,
        GET_STATUS,
    }
)

# header flags
VERSION = 0x1
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8

HEADER_SIZE = 12
MAX_PAYLOAD = 4096  # the largest message we accept (SET_MEM_TABLE with 8 regions is 328 bytes)
MAX_REGIONS = 8
VRING_IDX_MASK = 0xFF
VRING_NOFD_MASK = 0x100

# -- split virtqueue layout (virtio 1.x §2.7) --------------------------------------------------
VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_AVAIL_F_NO_INTERRUPT = 1
VRING_USED_F_NO_NOTIFY = 1
MAX_QUEUE_SIZE = 32768

DESC = np.dtype([("addr", "<u8"), ("len", "<u4"), ("flags", "<u2"), ("next", "<u2")])
USED_ELEM = np.dtype([("id", "<u4"), ("len", "<u4")])

# -- virtio-net header (virtio 1.x §5.1.6) ------------------------------------------------------
#: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers
NET_HDR = np.dtype(
    [
        ("flags", "u1"),
        ("gso_type", "u1"),
        ("hdr_len", "<u2"),
        ("gso_size", "<u2"),
        ("csum_start", "<u2"),
        ("csum_offset", "<u2"),
        ("num_buffers", "<u2"),
    ]
)
NET_HDR_LEN_LEGACY = 10  # without num_buffers: neither VERSION_1 nor MRG_RXBUF
NET_HDR_LEN = 12


def has(features: int, bit: int) -> bool:
    return bool(features >> bit & 1)


def net_hdr_len(features: int) -> int:
    return NET_HDR_LEN if has(features, F_VERSION_1) or has(features, NET_F_MRG_RXBUF) else NET_HDR_LEN_LEGACY


def driver_rx_caps(features: int) -> int:
    """What the driver takes on its receive queue (``offload.CAN_*``), from the negotiated
    features: what a device may deliver with its metadata instead of finishing it first."""
    if not has(features, NET_F_GUEST_CSUM):
        return 0
    caps = CAN_CSUM
    caps |= CAN_TSO4 if has(features, NET_F_GUEST_TSO4) else 0
    caps |= CAN_TSO6 if has(features, NET_F_GUEST_TSO6) else 0
    caps |= CAN_ECN if has(features, NET_F_GUEST_ECN) else 0
    caps |= CAN_USO if has(features, NET_F_GUEST_USO4) and has(features, NET_F_GUEST_USO6) else 0
    return caps


def device_rx_caps(features: int) -> int:
    """What the device takes on the driver's transmit queue (``offload.CAN_*``): what a driver
    may send with its metadata."""
    if not has(features, NET_F_CSUM):
        return 0
    caps = CAN_CSUM
    caps |= CAN_TSO4 if has(features, NET_F_HOST_TSO4) else 0
    caps |= CAN_TSO6 if has(features, NET_F_HOST_TSO6) else 0
    caps |= CAN_ECN if has(features, NET_F_HOST_ECN) else 0
    caps |= CAN_USO if has(features, NET_F_HOST_USO) else 0
    return caps


def need_event(event: int, new: int, old: int) -> bool:
    """virtio's ``vring_need_event``: did the index move past ``event`` between old and new?"""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF
