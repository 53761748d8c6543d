"""``spp-demo``: the whole patch panel on this machine in half a minute.

1. spp-ctl, spp-primary and two spp-nfv (launched through the REST API, as SPP does).
2. Traffic with nothing special needed: nfv 1 patches a null source into ``ring:0``, nfv 2 patches
   ``ring:0`` into a sink; the ring counters are shown moving.
3. As root: two network namespaces whose veth pairs become ``phy:0`` and ``phy:1``; nfv 1 patches
   them together and a ``ping`` crosses the panel.
4. The ``spp`` CLI's view of it, then how to look around yourself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from spp.console import quiet_broken_pipe, silence_stdout
from spp.integrations.netns import VethHost
from spp.integrations.testbed import Testbed, TestbedError

HOST_A = VethHost(ns="spp-demo-a", outer="spp-demo-a0", inner="spp-demo-a1", address="198.51.100.1/24")
HOST_B = VethHost(ns="spp-demo-b", outer="spp-demo-b0", inner="spp-demo-b1", address="198.51.100.2/24")


def say(text: str = "") -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        silence_stdout()  # the teardown that follows must not fail on its own messages
        raise


def step(title: str) -> None:
    say(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def show_ring_traffic(bed: Testbed, seconds: int) -> float:
    last = bed.ring_stats(0)
    t_last = time.monotonic()
    rates = []
    say(f"  {'time':>5} {'ring:0 tx':>14} {'ring:0 rx':>14} {'tx_drop':>12} {'rate':>12}")
    for i in range(seconds):
        time.sleep(1)
        now = bed.ring_stats(0)
        t = time.monotonic()
        rate = (now["rx"] - last["rx"]) / (t - t_last) / 1e6
        rates.append(rate)
        say(f"  {i + 1:>4}s {now['tx']:>14,} {now['rx']:>14,} {now['tx_drop']:>12,} {rate:>8.2f} Mpps")
        last, t_last = now, t
    return sorted(rates)[len(rates) // 2]


def describe_processes(procs: list[dict[str, Any]]) -> str:
    """``primary, nfv 1, nfv 2`` rather than the JSON of ``GET /v1/processes``."""
    names = [p["type"] if "client-id" not in p else f"{p['type']} {p['client-id']}" for p in procs]
    return ", ".join(names) or "none"


def run_cli(bed: Testbed, *commands: str) -> None:
    argv = [sys.executable, "-m", "spp.control.cli.main", "-b", f"127.0.0.1:{bed.api_port}"]
    for c in commands:
        argv += ["-e", c]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    say("  $ spp " + " ".join(f"-e '{c}'" for c in commands))
    for line in (out.stdout + out.stderr).rstrip().splitlines():
        say("  " + line)


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spp-demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--api-port", type=int, default=7777, help="spp-ctl REST port (default %(default)s)")
    ap.add_argument("--seconds", type=int, default=3, help="how long to show each traffic run")
    ap.add_argument("--keep", action="store_true", help="keep everything running until Enter or Ctrl-C")
    ap.add_argument("--no-netns", action="store_true", help="skip the namespace/ping part even as root")
    args = ap.parse_args(argv)

    use_netns = os.geteuid() == 0 and not args.no_netns and shutil.which("ip") is not None
    hosts = [HOST_A, HOST_B] if use_netns else []
    try:
        for h in hosts:
            h.create()
        step("Starting spp-ctl, spp-primary and two spp-nfv")
        with Testbed(
            ifaces=[h.outer for h in hosts],
            nb_rings=4,
            api_port=args.api_port,
            pri_port=5555 if args.api_port == 7777 else None,
            sec_port=6666 if args.api_port == 7777 else None,
        ) as bed:
            say(
                f"  spp-ctl REST API on http://127.0.0.1:{bed.api_port}/v1 (wire ports {bed.pri_port}, "
                f"{bed.sec_port})"
            )
            phys = ", ".join(f"phy:{i} = {h.outer}" for i, h in enumerate(hosts)) or "none"
            say(f"  spp-primary: 4 rings; phy ports: {phys}")
            t0 = time.monotonic()
            nfv1 = bed.launch_nfv(1, lcores="0,1")
            nfv2 = bed.launch_nfv(2, lcores="0,1", main_lcore=1)  # worker on the other core
            say(f"  launched nfv 1 and nfv 2 through PUT /v1/primary/launch in {time.monotonic() - t0:.2f} s")
            say(f"  processes: {describe_processes(bed.processes())}")

            step("nullpmd:0 -> ring:0 (nfv 1) -> ring:0 -> nullpmd:1 (nfv 2)")
            nfv1.add("nullpmd:0")
            nfv1.add("ring:0")
            nfv1.patch("nullpmd:0", "ring:0")
            nfv2.add("ring:0")
            nfv2.add("nullpmd:1")
            nfv2.patch("ring:0", "nullpmd:1")
            nfv2.forward()
            nfv1.forward()
            rate = show_ring_traffic(bed, args.seconds)
            nfv1.stop()
            nfv2.stop()
            say(f"  median {rate:.2f} Mpps of 64-byte frames through a shared ring between two processes")

            if use_netns:
                step("ping from namespace spp-demo-a to spp-demo-b through phy:0 <-> phy:1")
                nfv1.reset()
                nfv1.patch("phy:0", "phy:1")
                nfv1.patch("phy:1", "phy:0")
                nfv1.forward()
                ping = HOST_A.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.2")
                for line in ping.stdout.strip().splitlines():
                    say("  " + line)
                pst = bed.primary_status()["phy_ports"]
                say(f"  phy:0 rx {pst[0]['rx']} tx {pst[0]['tx']}; phy:1 rx {pst[1]['rx']} tx {pst[1]['tx']}")
                if ping.returncode != 0:
                    say("  ping did not get through: see the logs in " + str(bed.log_dir))
            else:
                step("Skipping the namespace/ping part")
                say("  (it needs root to create network namespaces; run the demo with sudo to see it)")

            step("The spp CLI's view")
            run_cli(bed, "status", "pri; status", "nfv 1; status")

            step("Look around yourself")
            say(f"  spp -b 127.0.0.1:{bed.api_port}          # interactive shell, TAB completes")
            say(f"  spp -b 127.0.0.1:{bed.api_port} top      # live packet rates of every port (Ctrl-C ends)")
            say("  spp > nfv 1; status                  spp > pri; status")
            say("  spp > topo term                      spp > nfv 2; patch ring:0 nullpmd:1")
            say(f"  curl http://127.0.0.1:{bed.api_port}/v1/processes")
            if args.keep or sys.stdin.isatty():
                say("\nEverything stays up until you press Enter (or Ctrl-C).")
                with contextlib.suppress(EOFError, KeyboardInterrupt):
                    input()
            step("Tearing down")
        say("  all processes stopped, shared memory removed")
    except TestbedError as e:
        say(f"spp-demo: {e}")
        return 1
    finally:
        for h in hosts:
            h.destroy()
        if hosts:
            say("  namespaces removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
