"""``tap:N`` against real TAP devices in this namespace.

What the port transmits must arrive on the kernel side of the interface, what the kernel sends
out of it must come out of ``rx_burst``, and the device must come and go with the port.
"""

from __future__ import annotations

import errno
import select
import subprocess
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from spp.engine import linux
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId
from spp.engine.ports import open_port
from spp.engine.ports.base import SOME, TX_DROP, PortContext, PortError
from spp.engine.ports.tap import QUIET, TapPort
from spp.instance import tap_ifname
from tests.netutil import (
    TEST_SRC,
    Capture,
    disable_ipv6,
    host_send,
    is_root,
    link_exists,
    make_frame,
    unique_tag,
    veth_pair_in_netns,
)


@pytest.fixture
def tap_env(pool: BufferPool, segment) -> Iterator[Callable[..., TapPort]]:
    """Factory: ``open_tap(num, name=None)``; closes the ports and deletes what tests left."""
    if not is_root():
        pytest.skip("needs root: creates TAP devices")
    ports: list[TapPort] = []
    names: list[str] = []

    def open_tap(num: int, name: str | None = None) -> TapPort:
        options = {f"tap:{num}": name} if name else {}
        port = open_port(
            PortId("tap", num), PortContext(seg=segment, pool=pool, client_id=1, options=options)
        )
        assert isinstance(port, TapPort)
        ports.append(port)
        names.append(port.iface)
        disable_ipv6(port.iface)  # keep the kernel's own chatter (RS, MLD) off the link
        return port

    yield open_tap
    for p in ports:
        p.close()
    for name in names:
        if link_exists(name):
            subprocess.run(["ip", "link", "del", "dev", name], check=False, capture_output=True)


def tap_name() -> str:
    return f"spt{unique_tag()}t"


def mixed(n: int, start: int = 0) -> list[bytes]:
    return [
        make_frame(i, (60, 1514, 61, 700, 128)[i % 5] if i % 3 else 60 + (i * 37) % 1455)
        for i in range(start, start + n)
    ]


def receive(
    port: TapPort, pool: BufferPool, count: int, bursts: tuple[int, ...], timeout: float = 5.0
) -> list[bytes]:
    got: list[bytes] = []
    fd = port.fileno()
    assert fd is not None
    deadline = time.monotonic() + timeout
    i = 0
    while len(got) < count and time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.05)[0]:
            continue
        bufs = port.rx_burst(bursts[i % len(bursts)])
        i += 1
        assert len(bufs) <= bursts[(i - 1) % len(bursts)]
        got += [f for f in (pool.read(b) for b in bufs.tolist()) if f[6:12] == TEST_SRC]
        pool.free(bufs)
    return got


def all_free(pool: BufferPool) -> bool:
    pool.flush()
    return pool.shared_free == pool.seg.spec.nb_bufs


def test_tap_default_name_created_up_and_removed_on_close(tap_env, segment) -> None:
    num = 3
    name = tap_ifname(segment.spec.prefix, num)  # the test segment's prefix is unique to this run
    assert not link_exists(name)
    port = tap_env(num)
    assert port.iface == name
    assert not port.existed
    assert linux.is_link_up(name)
    assert port.needs_polling is False
    assert port.fileno() is not None
    port.close()
    port.close()
    assert not link_exists(name), "a TAP the port created goes away with it"
    assert port.fileno() is None


def test_tx_frames_arrive_on_the_kernel_side(tap_env, pool: BufferPool) -> None:
    port = tap_env(1, tap_name())
    frames = mixed(500)
    frames[3] = make_frame(3, 1518, vlan=(0x8100, 12))
    frames[4] = make_frame(4, 80, vlan=(0x88A8, 1, 0x8100, 2))
    with Capture(port.iface, len(frames)) as cap:
        for lo, hi in ((0, 32), (32, 33), (33, 500)):
            assert port.tx_burst(pool.alloc_frames(frames[lo:hi])) == hi - lo
        out = cap.frames()
    assert out == frames
    assert all_free(pool)


def test_kernel_frames_come_out_of_rx_burst(tap_env, pool: BufferPool) -> None:
    port = tap_env(2, tap_name())
    frames = mixed(400)  # fewer than the device queue (txqueuelen 1000) holds
    frames[7] = make_frame(7, 300, vlan=(0x8100, 99))
    t0 = time.time_ns()
    host_send(frames, port.iface)
    got = receive(port, pool, len(frames), bursts=(7, 32, 256))
    assert got == frames
    assert all_free(pool)
    # Stamps are receive times in ns since the epoch.
    host_send([make_frame(999, 60)], port.iface)
    fd = port.fileno()
    select.select([fd], [], [], 2)
    bufs = port.rx_burst(32)
    assert len(bufs) >= 1
    assert t0 <= int(pool.stamps[bufs[-1]]) <= time.time_ns()
    pool.free(bufs)


def test_rx_on_an_idle_tap_returns_nothing_and_keeps_no_buffers(tap_env, pool: BufferPool) -> None:
    # The device exists with IPv6 off before the port brings it up: otherwise the kernel may send
    # its router solicitation or MLD report in the moment between "up" and the fixture's
    # disable_ipv6, and the TAP is not idle.
    name = tap_name()
    subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True, capture_output=True)
    try:
        disable_ipv6(name)
        port = tap_env(3, name)
        assert len(port.rx_burst(64)) == 0
        assert all_free(pool)
        port.close()
    finally:
        subprocess.run(["ip", "link", "del", "dev", name], check=False, capture_output=True)


def test_attaches_to_an_existing_persistent_tap(tap_env, pool: BufferPool) -> None:
    name = tap_name()
    subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True, capture_output=True)
    try:
        port = tap_env(4, name)
        assert port.existed
        frames = mixed(20)
        host_send(frames, port.iface)
        assert receive(port, pool, len(frames), bursts=(32,)) == frames
        port.close()
        assert link_exists(name), "a persistent TAP is left as it was found"
    finally:
        subprocess.run(["ip", "link", "del", "dev", name], check=False, capture_output=True)


def test_busy_or_foreign_interface_is_refused(tap_env) -> None:
    port = tap_env(5, tap_name())
    with pytest.raises(PortError, match="in use by another process"):
        tap_env(5, port.iface)
    with veth_pair_in_netns() as v, pytest.raises(PortError, match="not a TAP device"):
        tap_env(6, v.host_if)
    with pytest.raises(PortError, match="invalid interface name"):
        tap_env(7, "x" * 16)


def test_tx_runts_are_counted_and_a_down_link_accepts_nothing(tap_env, pool: BufferPool) -> None:
    port = tap_env(8, tap_name())
    burst = [make_frame(0, 60), b"", bytes(13), make_frame(1, 61)]
    with Capture(port.iface, 2, timeout=2) as cap:
        bufs = pool.alloc_frames(burst)
        # The two it sent come first; the runts are the caller's to free and count as tx_drop
        # (once each, and never as sent).
        assert port.tx_burst(bufs) == 2
        assert cap.frames() == [burst[0], burst[3]]
    assert [pool.read(b) for b in bufs[2:].tolist()] == [burst[1], burst[2]]
    pool.free(bufs[2:])
    assert int(port.counters[TX_DROP]) == 0
    linux.set_link_up(port.iface, False)
    bufs = pool.alloc_frames([make_frame(2, 60)] * 3)
    assert port.tx_burst(bufs) == 0
    assert port.last_error == errno.EIO
    pool.free(bufs)  # the caller owns what was not accepted
    assert all_free(pool)
    assert isinstance(port.counters, np.ndarray)


def wait_readable(port: TapPort, timeout: float = 5.0) -> bool:
    fd = port.fileno()
    assert fd is not None
    return bool(select.select([fd], [], [], timeout)[0])


def lone_test_frame(port: TapPort, timeout: float = 5.0) -> int:
    """The next frame of this test's that ``rx_one`` hands over alone; the kernel's own chatter
    on the link (router solicitations sent before IPv6 was turned off) is freed on the way."""
    pool = port.pool
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        b = port.rx_one()
        if b == SOME:  # frames came right after another: wait for a quiet spell
            for b in port.rx_burst(32).tolist():
                assert pool.read(b)[6:12] != TEST_SRC, "a test frame was not handed over alone"
                pool.free_one(b)
            time.sleep(port.quiet * 2)
        elif b >= 0 and pool.read(b)[6:12] == TEST_SRC:
            return b
        elif b >= 0:
            pool.free_one(b)
        else:
            wait_readable(port, 0.05)
    raise AssertionError("no test frame came out of rx_one")


def test_the_first_frame_after_a_quiet_spell_comes_out_of_rx_one(tap_env, pool: BufferPool) -> None:
    """An idle panel's path: a frame at a time straight into a buffer, no numpy, but only after
    the device was quiet for QUIET s; frames that keep coming are left to rx_burst."""
    port = tap_env(9, tap_name())
    assert port.quiet == QUIET
    subprocess.run(["ip", "link", "set", "dev", port.iface, "mtu", "9000"], check=True)
    first = make_frame(0, 98)
    more = [make_frame(i, 60 + i) for i in range(1, 6)]
    host_send([first, *more], port.iface)
    assert wait_readable(port)
    port.quiet = 60.0  # (a loaded machine may stall a test for more than QUIET between two lines)
    b = lone_test_frame(port)
    assert pool.read(b) == first
    assert pool.stamps[b] > 0
    pool.free_one(b)
    assert port.rx_one() == SOME  # frames right after another: all that wait go as a burst
    bufs = port.rx_burst(32)
    assert [f for f in (pool.read(b) for b in bufs.tolist()) if f[6:12] == TEST_SRC] == more
    pool.free(bufs)

    port.quiet = 0.005
    time.sleep(0.05)  # a quiet spell
    jumbo = make_frame(9, 8000)  # longer than a pool buffer: it lands in a large one
    host_send([jumbo], port.iface)
    b = lone_test_frame(port)
    assert b >= pool.large_base and pool.read(b) == jumbo
    pool.free_one(b)
    assert int(port.counters[TX_DROP]) == 0
    assert all_free(pool)


def test_tx_one_sends_a_lone_frame_and_refuses_alone_what_it_cannot(tap_env, pool: BufferPool) -> None:
    port = tap_env(10, tap_name())
    frame = make_frame(0, 74)
    with Capture(port.iface, 1, timeout=2) as cap:
        assert port.tx_one(pool.alloc_frames([frame])[0].item()) == 1
        assert cap.frames() == [frame]
    runt = pool.alloc_frames([bytes(13)])[0].item()
    assert port.tx_one(runt) == 0  # not taken: the caller frees it and counts the drop
    pool.free_one(runt)
    linux.set_link_up(port.iface, False)
    down = pool.alloc_frames([make_frame(1, 60)])[0].item()
    assert port.tx_one(down) == 0
    assert port.last_error == errno.EIO
    pool.free_one(down)
    assert all_free(pool)
