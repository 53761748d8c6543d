"""spp_pcap: capture one port to LZ4-compressed pcap files (spec: spp-dataplane.md §6).

``spp-pcap [EAL] -- --client-id N -s HOST:PORT -c PORT [--out-dir DIR] [--fsize BYTES]
[--format pcap|pcapng] [--filter EXPR]``

Threads, as SPP's lcores (``-l M,R[,W...]``):

* the **master** (first lcore) answers spp-ctl: ``_get_client_id``, ``status``, ``start``,
  ``stop``, ``exit``, plus ``filter [EXPR]`` (ours, see below);
* the **receiver** (second lcore) is a :class:`~spp.engine.worker.Worker` running one step,
  :class:`ReceiveStep`: ``rx_burst`` on the capture port and hand the burst (buffer indices, no
  copy) to the writers through a bounded queue. What does not fit in the queue is freed and
  counted in ``dropped``: a loss is never silent;
* **writers** (the remaining lcores; with only two lcores one writer shares the receiver's) take
  bursts off the queue in batches, drop what the filter rejects, build the records with numpy
  (:mod:`spp.engine.pcapfile`), compress them (``lz4.frame`` releases the GIL while it works),
  write them and free the buffers. Each writer has its own files, as in SPP.

Files: ``<out-dir>/spp_pcap.<YYYYMMDDhhmmss>.<phy|ring><N>.<writer>.<seq>.pcap.lz4`` (the time of
``start``, local time), named ``....tmp`` while open, renamed when closed. A file is rotated
before its *uncompressed* content would exceed ``--fsize``, and each file is a complete capture
with its own header, so ``lz4 -d`` then ``tcpdump -r`` reads any of them on its own. A name
already on disk (two sessions in one second, or an earlier run) is never overwritten: the
sequence number moves on instead.

Departures from SPP, on purpose:

* time stamps are those of *reception* (``buf_ts``, set by the port driver at rx), not the time
  a writer got round to the packet;
* ``--format pcapng`` writes pcapng (nanosecond stamps) instead of classic pcap (microseconds);
* ``--filter EXPR`` and the ``filter EXPR`` / ``filter`` command select what is written with a
  small BPF-like language (:mod:`spp.engine.capfilter`). spp-ctl has no endpoint for ``filter``:
  it is for tools that talk the wire protocol, and a change applies to the next batch a writer
  takes (packets already queued included);
* ``status`` adds counters after SPP's keys (receive: ``received``, ``dropped``; write:
  ``written``, ``filtered``, ``bytes``, and ``error`` after a write failure) and a top-level
  ``filter``. A writer that fails to write keeps consuming and counts what it cannot write as
  ``dropped`` until the next ``start`` (SPP's writer thread terminated);
* at least two lcores are needed rather than three.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import lz4.frame
import numpy as np

from spp.engine import offload, safefile
from spp.engine.capfilter import CaptureFilter, FilterError, compile_filter
from spp.engine.offload import new_xstats, xstats_dict
from spp.engine.pcapfile import GLOBAL_HEADER, pcap_records, pcapng_header, pcapng_records
from spp.engine.pool import BufferPool
from spp.engine.portid import PortId, PortUidError, parse_port_uid
from spp.engine.ports import Port, PortContext, PortError, open_port
from spp.engine.ports.base import RX
from spp.engine.shm import Segment, SegmentError
from spp.engine.worker import DEFAULT_BURST, Worker
from spp.processes.base import SppProcess, setup_logging
from spp.processes.options import OptionError, parse_eal, parse_server, split_eal
from spp.processes.worker_reply import client_id_reply, error, spaced_json, success

log = logging.getLogger(__name__)

DEFAULT_FSIZE = 1 << 30
CAPTURE_TYPES = ("phy", "ring")
SPP_COMMANDS = ("_get_client_id", "status", "start", "stop", "exit")
#: Packets a writer takes off the queue at once: bigger batches amortise the fixed numpy cost
#: per call (record building, the filter) when traffic is heavy; light traffic gives small ones.
WRITER_BATCH = 4096
#: Below this many packets a writer waits GATHER_SECONDS once for more before writing: at moderate
#: rates that cuts its CPU per packet by two thirds (measured at 0.4 Mpps), for ~2 ms of latency.
WRITER_MIN_BATCH = 1024
GATHER_SECONDS = 0.002
#: Upper bound of the hand-off queue in packets (SPP's ``cap_ring`` holds 16383).
QUEUE_MAX = 16384
CAPTURE_MODE = 0o640
"""Capture files hold other people's traffic: readable by the owner and its group only."""
STOP_TIMEOUT = 30.0

END_OF_SESSION = object()  # queue marker: the session is over, close your file and wait for the next one


@dataclass(frozen=True)
class CaptureFormat:
    """How records and file headers are made for one output format."""

    suffix: str
    header: Callable[[str], bytes]
    records: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


FORMATS = {
    "pcap": CaptureFormat("pcap.lz4", lambda _port: GLOBAL_HEADER, pcap_records),
    "pcapng": CaptureFormat("pcapng.lz4", pcapng_header, pcapng_records),
}


def new_compressor() -> lz4.frame.LZ4FrameCompressor:
    """SPP's LZ4 frame settings: 256 KiB linked blocks, no content checksum, fast level."""
    return lz4.frame.LZ4FrameCompressor(
        block_size=lz4.frame.BLOCKSIZE_MAX256KB,
        block_linked=True,
        content_checksum=False,
        compression_level=0,
        auto_flush=False,
    )


class CaptureWriter(threading.Thread):
    """Writer ``number``: batches off the queue -> filter -> records -> LZ4 -> its own files.

    Session control is a handshake with the master thread, so that the master may open the
    first file itself (and report a failure to ``start``) while the writer is known to be
    parked: the writer waits on :attr:`resume` before serving a session, and after it has
    taken one end-of-session marker off the queue it closes its file, sets :attr:`ended` and
    parks again. Each writer therefore takes exactly one of the markers ``stop`` queues.
    """

    def __init__(
        self,
        number: int,
        lcore: int | None,
        seg: Segment,
        hand_off: queue.SimpleQueue[Any],
        capture: Pcap,
    ) -> None:
        super().__init__(name=f"pcap-writer{number}", daemon=True)
        self.number = number
        self.lcore = lcore
        self.pool = BufferPool(seg)  # a handle belongs to one thread: this one frees our buffers
        #: software offload work and drops by reason (spp.engine.offload.XSTATS)
        self.xstats = new_xstats()
        self.queue = hand_off
        self.capture = capture
        self.resume = threading.Event()
        self.ended = threading.Event()  # set while parked between sessions
        self.ended.set()
        self.quit = False
        self.stamp = ""
        self.seq = 0
        self.filename = ""  # the open file's final name; "" when none is open
        self._name = ""  # the same, relative to the capture directory
        self.error = ""
        self._file: IO[bytes] | None = None
        self._compressor: lz4.frame.LZ4FrameCompressor | None = None
        self._file_bytes = 0  # uncompressed bytes in the open file, header included
        self._file_records = 0
        self.reset_counters()

    def reset_counters(self) -> None:
        self.done = 0  # packets taken off the queue and freed (the receiver's backlog count)
        self.written = 0
        self.filtered = 0
        self.dropped = 0
        self.bytes = 0  # uncompressed

    # -- master side (only while the writer is parked) --------------------------------------------

    def open_session(self, stamp: str) -> None:
        """Open the session's first file; raises OSError, leaving nothing open."""
        self.stamp, self.seq, self.error = stamp, 0, ""
        self.reset_counters()
        self._open_next()

    # -- writer thread ---------------------------------------------------------------------------

    def run(self) -> None:
        if self.lcore is not None and self.lcore in os.sched_getaffinity(0):
            os.sched_setaffinity(0, {self.lcore})
        while True:
            self.resume.wait()
            self.resume.clear()
            if self.quit:
                return
            self._serve_session()
            self.pool.flush()  # parked: give cached buffers back to the shared pool
            self.ended.set()

    def _serve_session(self) -> None:
        get, get_nowait = self.queue.get, self.queue.get_nowait
        pending: Any = None
        while True:
            item = pending if pending is not None else get()
            pending = None
            if item is END_OF_SESSION:
                self.close_file()
                return
            bursts = [item]
            n = len(item)
            napped = False
            while n < WRITER_BATCH:
                try:
                    nxt = get_nowait()
                except queue.Empty:
                    if napped or n >= WRITER_MIN_BATCH:
                        break
                    # A small batch costs nearly as much as a big one: let a few more bursts come.
                    time.sleep(GATHER_SECONDS)
                    napped = True
                    continue
                if nxt is END_OF_SESSION:
                    pending = nxt
                    break
                bursts.append(nxt)
                n += len(nxt)
            bufs = bursts[0] if len(bursts) == 1 else np.concatenate(bursts)
            # As tcpdump would see them on the wire: checksums complete, aggregates segmented.
            bufs = offload.finish(self.pool, bufs, self.xstats)
            wanted = self._select(bufs)
            before = self.written
            try:
                self._write(wanted)
            except OSError as e:
                self._fail(e)
                self.dropped += len(wanted) - (self.written - before)
            self.pool.free(bufs)
            self.done += n

    def _select(self, bufs: np.ndarray) -> np.ndarray:
        """The buffers the filter (read afresh for every batch) lets through."""
        flt = self.capture.filter
        if flt is None:
            return bufs
        keep = flt.match(self.pool.data, bufs, self.pool.lengths[bufs])
        kept = int(np.count_nonzero(keep))
        if kept == len(bufs):
            return bufs
        self.filtered += len(bufs) - kept
        return bufs[keep]

    def _write(self, bufs: np.ndarray) -> None:
        pool = self.pool
        n = len(bufs)
        if n == 0:
            return
        if self._file is None:  # a write failed earlier in this session
            self.dropped += n
            return
        out, sizes = self.capture.format.records(pool.data, bufs, pool.lengths[bufs], pool.stamps[bufs])
        ends = np.cumsum(sizes)
        fsize = self.capture.fsize
        i = done = 0
        while i < n:
            # Records i..j-1 fit in the room left; a record bigger than fsize gets a file alone.
            j = int(np.searchsorted(ends, done + fsize - self._file_bytes, side="right"))
            if j <= i:
                if self._file_records:
                    self._rotate()
                    continue
                j = i + 1
            end = int(ends[j - 1])
            self._put(out[done:end])
            self._file_records += j - i
            self.written += j - i
            i, done = j, end
            if i < n:
                self._rotate()

    def _put(self, chunk: np.ndarray | bytes) -> None:
        assert self._file is not None and self._compressor is not None
        packed = self._compressor.compress(chunk)
        if packed:
            self._file.write(packed)
        self._file_bytes += len(chunk)
        self.bytes += len(chunk)

    def _rotate(self) -> None:
        self.close_file()
        self._open_next()

    def _open_next(self) -> None:
        """The next free name in the capture directory, created as ``NAME.tmp``.

        Relative to the directory descriptor opened at start-up and exclusively: no link in the
        directory is followed and nothing in it is overwritten, whoever else can write there.
        """
        cap = self.capture
        while True:
            self.seq += 1
            name = f"spp_pcap.{self.stamp}.{cap.port_tag}.{self.number}.{self.seq}.{cap.format.suffix}"
            try:
                os.lstat(name, dir_fd=cap.out_fd)
                continue
            except FileNotFoundError:
                pass
            try:
                fd = os.open(f"{name}.tmp", safefile.WRITE_FLAGS, CAPTURE_MODE, dir_fd=cap.out_fd)
            except FileExistsError:
                continue
            break
        f = os.fdopen(fd, "wb")
        self._file, self._compressor = f, new_compressor()
        self._name = name
        self.filename = str(cap.out_dir / name)
        self._file_bytes = self._file_records = 0
        try:
            f.write(self._compressor.begin())
            self._put(cap.format.header(str(cap.port_uid)))
        except OSError:
            self.close_file()
            raise

    def close_file(self) -> None:
        """Finish the LZ4 frame, close and drop the ``.tmp`` suffix. Safe without a file."""
        f, comp, name = self._file, self._compressor, self._name
        self._file = self._compressor = None
        self.filename = self._name = ""
        if f is None or comp is None:
            return
        try:
            f.write(comp.flush())
        finally:
            f.close()
            try:
                safefile.link_no_replace(f"{name}.tmp", name, self.capture.out_fd)
            except FileExistsError:
                log.error(
                    "writer %d: %s appeared meanwhile; the capture stays in %s.tmp", self.number, name, name
                )

    def _fail(self, e: OSError) -> None:
        where = self.filename or str(self.capture.out_dir)
        self.error = f"{where}: {e.strerror or e}"
        log.error(
            "writer %d: %s; dropping what it cannot write until the next start", self.number, self.error
        )
        with contextlib.suppress(OSError):
            self.close_file()  # forgets the file even when it cannot finish it


class ReceiveStep:
    """The receiver's one step: a burst from the capture port onto the writers' queue.

    It does no more than that, so the receive thread keeps up with the port; filtering and
    everything else happen in the writers, on bigger batches. Ownership of the buffers moves to
    the queue; the part of a burst that does not fit in it (``capacity`` packets waiting) is
    freed at once and counted in :attr:`dropped`.
    """

    def __init__(self, port: Port, hand_off: queue.SimpleQueue[Any], capacity: int) -> None:
        self.port = port
        self.inputs = (port,)
        self.queue = hand_off
        self.capacity = capacity
        self.writers: list[CaptureWriter] = []
        self.pool = port.pool
        self.received = self.dropped = self.queued = 0

    def backlog(self) -> int:
        """Packets handed to the writers and not yet freed by them."""
        return self.queued - sum(w.done for w in self.writers)

    def run(self, burst: int) -> int:
        bufs = self.port.rx_burst(burst)
        n = len(bufs)
        if n == 0:
            return 0
        self.port.counters[RX] += n
        self.received += n
        stamps = self.pool.stamps[bufs]
        if not stamps.all():  # from a producer that does not stamp: the time we received it
            self.pool.stamps[bufs[stamps == 0]] = time.time_ns()
        room = self.capacity - self.backlog()
        if room < n:
            cut = max(room, 0)
            self.pool.free(bufs[cut:])
            self.dropped += n - cut
            bufs = bufs[:cut]
            if cut == 0:
                return n
        self.queued += len(bufs)
        self.queue.put(bufs)
        return n


class CommandError(Exception):
    """A refused command; the message is SPP's text, then a hint for people."""


class Pcap(SppProcess):
    name = "spp_pcap"
    pad_replies = False

    def __init__(
        self,
        seg: Segment,
        client_id: int,
        host: str,
        port: int,
        lcores: list[int],
        capture: PortId,
        out_dir: Path,
        fsize: int = DEFAULT_FSIZE,
        fmt: str = "pcap",
        capture_filter: CaptureFilter | None = None,
        burst: int = DEFAULT_BURST,
        queue_size: int | None = None,
    ) -> None:
        if len(lcores) < 2:
            raise OptionError(
                f"spp_pcap needs at least two lcores (-l MASTER,RECEIVER[,WRITER...]), got {lcores}"
            )
        super().__init__(seg, host, port, client_id, "pcap")
        self.lcores = lcores
        self.name = f"spp_pcap:{client_id}"
        self.port_uid = capture
        self.port_tag = f"{capture.type}{capture.num}" + (f"nq{capture.queue}" if capture.queue else "")
        self.out_dir = out_dir
        try:
            # Opened once: files are created relative to it, so swapping the path for a link later
            # cannot send them elsewhere.
            self.out_fd = safefile.open_directory(out_dir)
        except OSError as e:
            seg.release_process_slot(client_id)
            raise OptionError(f"--out-dir {out_dir}: {e.strerror or e}") from None
        self.fsize = fsize
        self.format = FORMATS[fmt]
        self.filter = capture_filter
        self.running = False
        try:
            ctx = PortContext(seg=seg, pool=self.pool, client_id=client_id)
            self.port = open_port(capture, ctx)
        except PortError:
            seg.release_process_slot(client_id)
            raise
        capacity = queue_size or min(QUEUE_MAX, seg.spec.nb_bufs // 4)
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.step = ReceiveStep(self.port, self.queue, capacity)
        self.worker = Worker(self.pool, name=f"pcap{client_id}-rx", burst=burst, lcore=lcores[1])
        writer_lcores = lcores[2:] or [lcores[1]]
        self.writers = [
            CaptureWriter(i + 1, lcore, seg, self.queue, self) for i, lcore in enumerate(writer_lcores)
        ]
        self.step.writers = self.writers
        self.worker.start()
        for w in self.writers:
            w.start()

    # -- wire protocol -----------------------------------------------------------------------------

    def dispatch(self, command: str) -> Any:
        tokens = command.split()
        try:
            if tokens[0] == "filter":
                return self.set_filter(command.strip()[len("filter") :].strip())
            if tokens[0] not in SPP_COMMANDS:
                raise CommandError(
                    f"Invalid value (command): '{tokens[0]}' is not a spp_pcap command "
                    f"(expected {', '.join(SPP_COMMANDS)} or filter)"
                )
            if len(tokens) != 1:
                raise CommandError(f"Wrong message format: '{tokens[0]}' takes no arguments")
            if tokens[0] == "exit":
                return super().dispatch(command)  # -> exit_reply, which stops the capture first
            return self.handle(tokens)
        except CommandError as e:
            return spaced_json(error(str(e)))

    def handle(self, tokens: list[str]) -> str:
        cmd = tokens[0]
        if cmd == "_get_client_id":
            self.mark_registered()
            return spaced_json(client_id_reply(self.client_id, "pcap"))
        if cmd == "status":
            return spaced_json(success(info=self.status()))
        if cmd == "start":
            self.start_capture()
        else:
            self.stop_capture()
        return spaced_json(success())

    def exit_reply(self) -> str:
        # Stop (drain, close, rename) before answering, so the files are final once spp-ctl's
        # DELETE returns.
        try:
            self.stop_capture()
        except CommandError as e:
            log.error("%s", e)
        return spaced_json(success())

    def set_filter(self, text: str) -> str:
        if not text:
            self.filter = None
            log.info("filter cleared: capturing everything")
        else:
            try:
                self.filter = compile_filter(text)
            except FilterError as e:
                raise CommandError(f"Invalid value (filter): {e}") from None
            log.info("filter set: %s", self.filter)
        return spaced_json(success())

    def status(self) -> dict[str, Any]:
        step = self.step
        cores: list[dict[str, Any]] = [
            {
                "core": self.lcores[1],
                "role": "receive",
                "rx_port": [{"port": self.port_uid.display}],
                "received": step.received,
                "dropped": step.dropped,
            }
        ]
        port_xs = xstats_dict(step.port.xstats)
        if port_xs:
            cores[0]["xstats"] = port_xs
        for w in self.writers:
            entry: dict[str, Any] = {
                "core": w.lcore,
                "role": "write",
                "filename": w.filename,
                "written": w.written,
                "filtered": w.filtered,
                "bytes": w.bytes,
            }
            if w.dropped:
                entry["dropped"] = w.dropped
            xs = xstats_dict(w.xstats)
            if xs:
                entry["xstats"] = xs
            if w.error:
                entry["error"] = w.error
            cores.append(entry)
        return {
            "client-id": self.client_id,
            "status": "running" if self.running else "idle",
            "master-lcore": self.lcores[0],
            "core": cores,
            "filter": str(self.filter) if self.filter is not None else "",
        }

    # -- capture sessions --------------------------------------------------------------------------

    def start_capture(self) -> None:
        """Open every writer's first file, then start receiving. Idempotent, as SPP's."""
        if self.running:
            return
        busy = [w.number for w in self.writers if not w.ended.is_set()]
        if busy:
            raise CommandError(f"error occur: writer {busy} is still finishing the last capture")
        stamp = time.strftime("%Y%m%d%H%M%S", time.localtime())
        opened: list[CaptureWriter] = []
        try:
            for w in self.writers:
                w.open_session(stamp)
                opened.append(w)
        except OSError as e:
            for w in opened:
                with contextlib.suppress(OSError):
                    w.close_file()
            raise CommandError(
                f"error occur: cannot create a capture file in {self.out_dir}: {e.strerror}"
            ) from e
        step = self.step
        step.received = step.dropped = step.queued = 0
        for w in self.writers:
            w.ended.clear()
            w.resume.set()
        self.worker.publish([step])
        self.running = True
        log.info("capture of %s started: %s", self.port_uid, ", ".join(w.filename for w in self.writers))

    def stop_capture(self) -> None:
        """Stop receiving, let the writers drain the queue, close and rename their files."""
        if not self.running:
            return
        self.worker.publish(None)  # returns once the receiver has left its last burst
        self.running = False
        # Drop a phy port's socket: frames arriving while idle must not be captured later.
        self.port.close()
        for _ in self.writers:
            self.queue.put(END_OF_SESSION)
        late = [w.number for w in self.writers if not w.ended.wait(STOP_TIMEOUT)]
        st = self.step
        log.info(
            "capture of %s stopped: %d received, %d dropped, %d written",
            self.port_uid,
            st.received,
            st.dropped,
            sum(w.written for w in self.writers),
        )
        if late:
            raise CommandError(f"error occur: writer {late} did not finish within {STOP_TIMEOUT:.0f} s")

    def shutdown(self) -> None:
        try:
            self.stop_capture()
        except CommandError as e:
            log.error("%s", e)
        for w in self.writers:
            w.quit = True
            w.resume.set()
        for w in self.writers:
            w.join(5)
            w.pool.close()
        self.worker.stop()
        self.port.close()
        with contextlib.suppress(OSError):
            os.close(self.out_fd)
        super().shutdown()


# -- command line ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # an option is spelt out or refused, never guessed
        prog="spp-pcap",
        description="SPP secondary: capture a port to LZ4-compressed pcap files",
        usage=(
            "spp-pcap [EAL options] -- --client-id N -s HOST:PORT -c PORT [--out-dir DIR] "
            "[--fsize BYTES] [--format pcap|pcapng] [--filter EXPR]"
        ),
    )
    p.add_argument("--client-id", dest="client_id", type=int, required=True, help="secondary id (1..127)")
    p.add_argument("-s", "--server", default="127.0.0.1:6666", help="spp-ctl address for secondaries")
    p.add_argument(
        "-c", "--capture-port", dest="port", required=True, help="port to capture: phy:N or ring:N"
    )
    p.add_argument("--out-dir", default="/tmp", help="existing directory for the files (default %(default)s)")
    p.add_argument(
        "--fsize",
        type=int,
        default=DEFAULT_FSIZE,
        help="rotate before a file's uncompressed size exceeds BYTES (default %(default)s)",
    )
    p.add_argument("--format", choices=sorted(FORMATS), default="pcap", help="file format (default pcap)")
    p.add_argument("--filter", default=None, help="capture only what matches EXPR (BPF-like subset)")
    p.add_argument("--burst", type=int, default=DEFAULT_BURST, help="receive burst (default %(default)s)")
    p.add_argument(
        "--queue", type=int, default=0, help="packets the writers may have waiting (default: by pool)"
    )
    p.add_argument("--log-level", default="INFO")
    return p


def check_options(args: argparse.Namespace) -> tuple[PortId, Path, CaptureFilter | None]:
    """Everything that can be refused before touching the shared segment."""
    if not 0 < args.client_id < 128:
        raise OptionError(f"client id {args.client_id} out of range 1..127")
    try:
        uid = parse_port_uid(args.port)
    except PortUidError as e:
        raise OptionError(f"-c: {e}") from None
    if uid.type not in CAPTURE_TYPES:
        raise OptionError(f"-c {args.port}: spp_pcap captures phy:N or ring:N ports, not {uid.type}")
    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        raise OptionError(f"--out-dir {args.out_dir}: no such directory (it must exist)")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OptionError(f"--out-dir {args.out_dir}: not writable")
    if args.fsize < 1:
        raise OptionError(f"--fsize {args.fsize}: must be a positive number of bytes")
    if args.burst < 1:
        raise OptionError(f"--burst {args.burst}: must be at least 1")
    if args.queue < 0:
        raise OptionError(f"--queue {args.queue}: must not be negative")
    try:
        flt = compile_filter(args.filter) if args.filter is not None else None
    except FilterError as e:
        raise OptionError(f"--filter: {e}") from None
    return uid, out_dir, flt


def main(argv: list[str] | None = None) -> int:
    eal_args, app_args = split_eal(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(app_args)
    setup_logging(f"spp_pcap:{args.client_id}", args.log_level)
    try:
        eal = parse_eal(eal_args)
        host, port = parse_server(args.server, 6666)
        uid, out_dir, flt = check_options(args)
        seg = Segment.attach(eal.file_prefix)
        proc = Pcap(
            seg, args.client_id, host, port, eal.lcores, uid, out_dir, args.fsize, args.format, flt,
            args.burst, args.queue or None,
        )  # fmt: skip
    except (OptionError, SegmentError, PortError) as e:
        print(f"spp-pcap: error: {e}", file=sys.stderr)
        return 1
    log.info(
        "client id %d, lcores %s, capturing %s to %s (%s, %d bytes per file%s)",
        args.client_id,
        eal.lcores,
        uid,
        out_dir,
        args.format,
        args.fsize,
        f", filter '{flt}'" if flt else "",
    )
    return proc.run()


if __name__ == "__main__":
    sys.exit(main())
