"""``--busy-poll-us``: an nfv's worker keeps polling that long after the last packet before it
sleeps (latency for CPU, as NAPI busy polling), parsed and refused like any other option."""

from __future__ import annotations

import time

import pytest

from spp.control.ctl import launch
from spp.engine import doorbell
from spp.engine.doorbell import ASLEEP
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId
from spp.engine.ports.base import PortContext
from spp.engine.ports.ring import RingPort
from spp.engine.ring import Ring
from spp.engine.worker import SPIN_SECONDS, Route, Worker
from spp.processes.nfv import MAX_BUSY_POLL_US, build_parser
from tests.netutil import wait_until


def test_the_option_is_parsed_in_microseconds_with_the_usual_default():
    args = build_parser().parse_args(["-n", "1"])
    assert args.busy_poll_us == round(SPIN_SECONDS * 1_000_000)
    assert build_parser().parse_args(["-n", "1", "--busy-poll-us", "20000"]).busy_poll_us == 20000
    assert build_parser().parse_args(["-n", "1", "--busy-poll-us", "0"]).busy_poll_us == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "-1 is out of range 0..1000000"),
        (str(MAX_BUSY_POLL_US + 1), "out of range"),
        ("2.5", "'2.5' is not a whole number of microseconds"),
        ("fast", "'fast' is not a whole number"),
    ],
)
def test_a_bad_value_is_refused_with_a_clear_error(value, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["-n", "1", f"--busy-poll-us={value}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--busy-poll-us" in err and message in err


def test_spp_ctl_passes_it_on_to_a_launched_nfv():
    body = {
        "proc_name": "spp_nfv",
        "client_id": 2,
        "eal": {"-l": "0,1", "--proc-type": "secondary"},
        "app": {"-n": 2, "-s": "127.0.0.1:6666", "--busy-poll-us": 20000},
    }
    assert launch.build_launch(body)[1].endswith("-- -n 2 -s 127.0.0.1:6666 --busy-poll-us 20000")


@pytest.mark.skipif(not doorbell.AVAILABLE, reason="libatomic missing: rings are polled")
def test_the_worker_polls_on_after_a_packet_then_sleeps(segment):
    """With a long busy-poll the worker stays awake (its ring doorbell shows no sleeper) well after
    a packet, and still falls asleep once the traffic has stopped for that long."""
    pool = BufferPool(segment)
    ctx = PortContext(seg=segment, pool=pool, client_id=1)
    src, dst = RingPort(PortId("ring", 0), ctx), RingPort(PortId("ring", 1), ctx)
    feed, out = Ring(segment, 0), Ring(segment, 1)
    worker = Worker(pool, backstop=None, spin=1.0)
    worker.start()
    worker.publish([Route(src, dst)])
    mine = BufferPool(segment)
    try:
        assert wait_until(lambda: feed._ctl.item(ASLEEP), 10), "no traffic at all: asleep after 1 s"
        assert feed.enqueue(mine.alloc(1)) == 1
        assert wait_until(lambda: len(out) == 1, 5)
        mine.free(out.dequeue(1))
        for _ in range(4):  # (0.4 s of the 1 s: room for a slow machine)
            time.sleep(0.1)
            assert not feed._ctl.item(ASLEEP), "the worker went to sleep within its busy-poll"
        assert wait_until(lambda: feed._ctl.item(ASLEEP), 10), "and sleeps once it has passed"
    finally:
        worker.stop()
        src.close()
        dst.close()
        mine.close()
        pool.close()
