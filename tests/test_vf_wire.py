"""spp_vf and spp_mirror on the wire, byte for byte: this test plays spp-ctl (a TCP server) and
checks the exact replies of a real process — SPP's spaced JSON, unpadded, key order of the status
``info`` — and its error messages."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator


class FakeCtl:
    """A one-connection spp-ctl: accept the process, then one command -> one reply."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(20)
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.conn, _ = self.server.accept()
        self.conn.settimeout(10)

    def ask(self, command: str) -> str:
        assert self.conn is not None
        self.conn.sendall(command.encode())
        raw = b""
        while True:
            raw += self.conn.recv(65536)
            try:
                json.loads(raw)
                return raw.decode()
            except ValueError:
                continue

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@contextlib.contextmanager
def worker_process(segment, kind: str, client_id: int, lcores: str = "0,1,2") -> Iterator[FakeCtl]:
    ctl = FakeCtl()
    argv = [sys.executable, "-m", f"spp.processes.{kind}", "-l", lcores, "--file-prefix", segment.spec.prefix]
    argv += ["--", "--client-id", str(client_id), "-s", f"127.0.0.1:{ctl.port}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ctl.accept()
        yield ctl
    finally:
        ctl.close()
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        assert proc.stderr is not None
        proc.stderr.close()


OK = '{ "results": [ { "result": "success" } ] }'


def err(message: str) -> str:
    detail = json.dumps(message)
    return '{ "results": [ { "result": "error", "error_details": { "message": ' + detail + " } } ] }"


def test_vf_replies_byte_for_byte(make_segment):
    seg = make_segment(nb_rings=4)
    with worker_process(seg, "vf", 3) as ctl:
        assert ctl.ask("_get_client_id") == (
            '{ "results": [ { "result": "success" } ], "client_id": 3, "process_type": "vf" }'
        )
        assert ctl.ask("status") == (
            '{ "results": [ { "result": "success" } ], "info": { "client-id": 3, "phy": [  ], '
            '"vhost": [  ], "ring": [  ], "master-lcore": 0, "core": [ { "core": 1, "type": "unuse" }, '
            '{ "core": 2, "type": "unuse" } ], "classifier_table": [  ] } }'
        )
        for command in (
            "component start cls 1 classifier",
            "port add ring:0 rx cls",
            "port add ring:1 tx cls add_vlantag 101 3",
            "classifier_table add vlan 101 fa:16:3e:7d:cc:35 ring:1",
        ):
            assert ctl.ask(command) == OK, command
        assert ctl.ask("status") == (
            '{ "results": [ { "result": "success" } ], "info": { "client-id": 3, "phy": [  ], '
            '"vhost": [  ], "ring": [ "0", "1" ], "master-lcore": 0, "core": [ { "core": 1, '
            '"name": "cls", "type": "classifier", "rx_port": [ { "port": "ring:0", "vlan": '
            '{ "operation": "none", "id": 0, "pcp": 0 } } ], "tx_port": [ { "port": "ring:1", '
            '"vlan": { "operation": "add", "id": 101, "pcp": 3 } } ], "counters": { "rx": 0, '
            '"tx": 0, "tx_drop": 0, "drop": 0 } }, { "core": 2, "type": "unuse" } ], '
            '"classifier_table": [ { "type": "vlan", "value": "101/FA:16:3E:7D:CC:35", '
            '"port": "ring:1" } ], '
            # not in SPP, after its keys: each port's counters
            '"stats": [ { "port": "ring:0", "rx": 0, "rx_drop": 0, "tx": 0, "tx_drop": 0, "rx_bytes": 0, '
            '"tx_bytes": 0 }, { "port": "ring:1", "rx": 0, "rx_drop": 0, "tx": 0, "tx_drop": 0, '
            '"rx_bytes": 0, "tx_bytes": 0 } ] } }'
        )
        assert ctl.ask("status please") == err("Wrong message format: 'status' takes no parameters")
        assert ctl.ask("flush") == err(
            "Invalid value (command): 'flush' was removed from SPP: every command takes effect at once"
        )
        assert ctl.ask("component start cls2 0 forward") == err(
            "Invalid value (core): lcore 0 is the master lcore (it answers spp-ctl); worker lcores: 1, 2"
        )
        assert ctl.ask("port add ring:0 rx cls") == OK  # again, no VLAN option: a no-op, as SPP
        assert ctl.ask("component start fwd 2 forward") == OK
        assert ctl.ask("port add ring:0 rx fwd") == err(
            "Invalid value (port rxtx): ring:0 is already the rx port of component 'cls' "
            "(a port has one rx user)"
        )
        assert ctl.ask("port add ring:2 rx cls") == err(
            "error occur: component 'cls' (classifier) takes at most 1 rx port"
        )
        assert ctl.ask("port add ring:7 tx cls") == err(
            "Invalid value (port): ring:7 does not exist: the primary created ring:0..ring:3 (-n 4)"
        )
        assert ctl.ask("exit") == OK
    assert seg.process_state(3)[1] == 0  # the slot is free again


def test_mirror_replies_and_refusals(make_segment):
    seg = make_segment(nb_rings=4)
    with worker_process(seg, "mirror", 5, lcores="0,1") as ctl:
        assert ctl.ask("_get_client_id") == (
            '{ "results": [ { "result": "success" } ], "client_id": 5, "process_type": "mirror" }'
        )
        assert ctl.ask("component start mir 0 mirror") == err(
            "Invalid value (core): lcore 0 is the master lcore (it answers spp-ctl); worker lcores: 1"
        )
        assert ctl.ask("component start mir 1 forward") == err(
            "Invalid value (component type): 'forward' is not a spp_mirror component type (mirror)"
        )
        assert ctl.ask("component start mir 1 mirror") == OK
        for port, d in (("ring:0", "rx"), ("ring:1", "tx"), ("ring:2", "tx")):
            assert ctl.ask(f"port add {port} {d} mir") == OK
        assert ctl.ask("port add ring:3 tx mir") == err(
            "error occur: component 'mir' (mirror) takes at most 2 tx ports"
        )
        assert ctl.ask("classifier_table add mac default ring:1") == err(
            "Invalid value (command): spp_mirror has no classifier table"
        )
        status = json.loads(ctl.ask("status"))
        assert list(status["info"]) == ["client-id", "phy", "vhost", "ring", "master-lcore", "core", "stats"]
        assert status["info"]["master-lcore"] == 0 and status["info"]["ring"] == ["0", "1", "2"]
        assert ctl.ask("component stop mir 9 mirror") == OK  # the recipes' form
        assert ctl.ask("exit") == OK
