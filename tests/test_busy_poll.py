"""``--busy-poll-us``: a forwarding worker keeps polling that long after the last packet before it
sleeps (latency for CPU, as NAPI busy polling), parsed and refused like any other option, in
every process that forwards (spp-nfv, spp-vf, spp-mirror, spp-primary)."""

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
from spp.engine.shm import Segment
from spp.engine.worker import SPIN_SECONDS, Route, Worker
from spp.integrations.testbed import Testbed
from spp.processes import nfv, primary, worker_commands
from spp.processes.options import MAX_BUSY_POLL_US
from tests.netutil import wait_until
from tests.test_vf_components import Wire

#: each process's parser and the options it needs besides --busy-poll-us
PARSERS = {
    "spp-nfv": (nfv.build_parser, ["-n", "1"]),
    "spp-vf": (lambda: worker_commands.build_parser("spp-vf"), ["--client-id", "1"]),
    "spp-mirror": (lambda: worker_commands.build_parser("spp-mirror"), ["--client-id", "1"]),
    "spp-primary": (primary.build_parser, ["-n", "4"]),
}


@pytest.mark.parametrize("prog", PARSERS)
def test_the_option_is_parsed_in_microseconds_with_the_usual_default(prog):
    build_parser, needed = PARSERS[prog]
    args = build_parser().parse_args(needed)
    assert args.busy_poll_us == round(SPIN_SECONDS * 1_000_000)
    assert build_parser().parse_args([*needed, "--busy-poll-us", "20000"]).busy_poll_us == 20000
    assert build_parser().parse_args([*needed, "--busy-poll-us", "0"]).busy_poll_us == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "-1 is out of range 0..1000000"),
        (str(MAX_BUSY_POLL_US + 1), "out of range"),
        ("2.5", "'2.5' is not a whole number of microseconds"),
        ("fast", "'fast' is not a whole number"),
    ],
)
@pytest.mark.parametrize("prog", PARSERS)
def test_a_bad_value_is_refused_with_a_clear_error(prog, value, message, capsys):
    build_parser, needed = PARSERS[prog]
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*needed, f"--busy-poll-us={value}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--busy-poll-us" in err and message in err


@pytest.mark.parametrize(
    ("proc_name", "id_option"), [("spp_nfv", "-n"), ("spp_vf", "--client-id"), ("spp_mirror", "--client-id")]
)
def test_spp_ctl_passes_it_on_to_a_launched_secondary(proc_name, id_option):
    body = {
        "proc_name": proc_name,
        "client_id": 2,
        "eal": {"-l": "0,1", "--proc-type": "secondary"},
        "app": {id_option: 2, "-s": "127.0.0.1:6666", "--busy-poll-us": 20000},
    }
    expected = f"-- {id_option} 2 -s 127.0.0.1:6666 --busy-poll-us 20000"
    assert launch.build_launch(body)[1].endswith(expected)


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


@pytest.mark.skipif(not doorbell.AVAILABLE, reason="libatomic missing: rings are polled")
@pytest.mark.parametrize(("kind", "component", "copies"), [("vf", "forward", 1), ("mirror", "mirror", 2)])
def test_a_worker_secondary_started_with_it_polls_on_after_a_packet(kind, component, copies):
    """spp-vf and spp-mirror as real processes: a component's worker lcore keeps polling its rx
    ring for the busy-poll time after a frame has passed, then sleeps; without the option the
    same component is asleep again within moments (the 200 µs default)."""
    with Testbed(nb_rings=6) as bed:
        wire = Wire(Segment.attach(bed.prefix))
        try:
            patient = bed.start_worker(kind, 1, lcores="0,1", extra=["--busy-poll-us", "1000000"])
            brisk = bed.start_worker(kind, 2, lcores="0,1")
            for worker, rx in ((patient, 0), (brisk, 3)):
                worker.start("c", 1, component)
                worker.attach(f"ring:{rx}", "rx", "c")
                for tx in range(rx + 1, rx + 1 + copies):
                    worker.attach(f"ring:{tx}", "tx", "c")
            feeds = {rx: Ring(wire.seg, rx) for rx in (0, 3)}
            assert wait_until(lambda: all(f._ctl.item(ASLEEP) for f in feeds.values()), 10)
            frame = bytes(12) + b"\x08\x00" + bytes(50)
            wire.push(0, [frame])
            wire.push(3, [frame])
            assert len(wire.take(1, 1)) == 1 and len(wire.take(4, 1)) == 1
            assert not feeds[0]._ctl.item(ASLEEP), "--busy-poll-us 1000000: still polling"
            assert wait_until(lambda: feeds[3]._ctl.item(ASLEEP), 0.5), "default: asleep again at once"
            assert wait_until(lambda: feeds[0]._ctl.item(ASLEEP), 10), "and asleep once it has passed"
        finally:
            wire.pool.close()
