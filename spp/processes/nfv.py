"""spp_nfv: a secondary that forwards by a patch table.

``spp-nfv [EAL] -- -n CLIENT_ID -s HOST:PORT [--vhost-client] [--vhost-dir DIR]``

The first lcore is the master (it answers spp-ctl), the second runs the forwarding worker.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from spp.engine.patchpanel import PatchPanel
from spp.engine.portid import PortId
from spp.engine.ports import PortContext
from spp.engine.shm import Segment
from spp.engine.worker import DEFAULT_BURST, SPIN_SECONDS, Worker
from spp.processes.base import SppProcess, add_busy_poll_option, run_secondary
from spp.processes.commands import PANEL_COMMANDS, Reply, failed, run_panel_command

log = logging.getLogger(__name__)

NFV_ADDABLE = ("ring", "vhost", "pcap", "nullpmd", "tap", "virtio_user")


class Nfv(SppProcess):
    name = "spp_nfv"

    def __init__(
        self,
        seg: Segment,
        client_id: int,
        host: str,
        port: int,
        lcores: list[int],
        vhost_client: bool = False,
        burst: int = DEFAULT_BURST,
        options: dict[str, str] | None = None,
        spin: float = SPIN_SECONDS,
    ) -> None:
        super().__init__(seg, host, port, client_id, "nfv")
        self.lcores = lcores
        self.name = f"spp_nfv:{client_id}"
        worker_lcore = lcores[1] if len(lcores) > 1 else None
        self.worker = Worker(
            self.pool, name=f"nfv{client_id}-fwd", burst=burst, lcore=worker_lcore, spin=spin
        )
        ctx = PortContext(
            seg=seg,
            pool=self.pool,
            client_id=client_id,
            vhost_client=vhost_client,
            options=dict(options or {}),
        )
        self.panel = PatchPanel(ctx, self.worker, NFV_ADDABLE)
        for n in range(len(seg.spec.phys)):
            self.panel.register(PortId("phy", n))
        self.worker.start()

    def handle(self, tokens: list[str]) -> Reply | str:
        cmd = tokens[0]
        if cmd == "_get_client_id":
            self.mark_registered()
            return {"results": [{"result": "success"}], "client_id": self.client_id, "process_type": "nfv"}
        if cmd == "_set_client_id":
            return failed(cmd, "the client id is fixed at start (-n)")
        if cmd == "status":
            return self.status()
        if cmd in PANEL_COMMANDS:
            return run_panel_command(self.panel, tokens)
        return failed(cmd, f"unknown command '{cmd}'")

    def status(self) -> dict[str, Any]:
        return {
            "client-id": self.client_id,
            "status": "running" if self.panel.forwarding else "idling",
            "master-lcore": self.lcores[0],
            "lcores": sorted(self.lcores),
            "ports": self.panel.port_names(),
            "patches": self.panel.patch_list(),
            "stats": self.panel.port_stats(),
        }

    def shutdown(self) -> None:
        self.panel.close()
        self.worker.stop()
        super().shutdown()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # an option is spelt out or refused, never guessed
        prog="spp-nfv",
        description="SPP secondary: patch-table forwarder",
        usage="spp-nfv [EAL options] -- -n CLIENT_ID -s HOST:PORT [--vhost-client]",
    )
    p.add_argument(
        "-n", "--client-id", dest="client_id", type=int, required=True, help="secondary id (1..127)"
    )
    p.add_argument("-s", "--server", default="127.0.0.1:6666", help="spp-ctl address for secondaries")
    p.add_argument("--vhost-client", action="store_true", help="vhost-user ports connect as client")
    p.add_argument("--vhost-dir", help="directory of vhost:N sockets sockN (default /tmp)")
    p.add_argument(
        "--burst", type=int, default=DEFAULT_BURST, help="max packets per burst (default %(default)s)"
    )
    add_busy_poll_option(p, "the forwarder")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_secondary(Nfv, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
