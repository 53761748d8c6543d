"""``spp-demo``: the whole patch panel on this machine in half a minute.

1. spp-ctl, spp-primary and two spp-nfv (launched through the REST API, as SPP does).
2. Traffic with nothing special needed: nfv 1 patches a null source into ``ring:0``, nfv 2 patches
   ``ring:0`` into a sink; the ring counters are shown moving.
3. As root: two network namespaces whose veth pairs become ``phy:0`` and ``phy:1``; nfv 1 patches
   them together and a ``ping`` crosses the panel.
4. The ``spp`` CLI's view of it, then how to look around yourself.

The demo is an instance of its own and never touches one it did not start: it runs its own
spp-ctl (on SPP's ports 7777/5555/6666 when they are free, on free ports otherwise, or on the
``--api-port`` given, refusing when that is taken), its own file prefix, and namespaces and veth
links named from that prefix.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from spp.console import quiet_broken_pipe, silence_stdout
from spp.instance import check_file_prefix
from spp.integrations.netns import VethHost
from spp.integrations.testbed import Testbed, TestbedError, free_port, port_in_use

SPP_PORTS = (7777, 5555, 6666)  # REST, primary, secondaries: spp-ctl's defaults


def demo_hosts(prefix: str) -> tuple[VethHost, VethHost]:
    """The two stand-in hosts of one demo instance, named from its file prefix (interface names
    must fit 15 characters, hence a short hash there)."""
    tag = hashlib.blake2s(prefix.encode(), digest_size=3).hexdigest()
    return (
        VethHost(ns=f"spp-{prefix}-a", outer=f"sd{tag}a0", inner=f"sd{tag}a1", address="198.51.100.1/24"),
        VethHost(ns=f"spp-{prefix}-b", outer=f"sd{tag}b0", inner=f"sd{tag}b1", address="198.51.100.2/24"),
    )


def choose_ports(api_port: int | None) -> tuple[int, int, int]:
    """REST, primary and secondary ports for the demo's own spp-ctl.

    SPP's defaults when all three are free (so a plain ``spp`` finds the demo), free ports when
    any is taken: a spp-ctl already there is someone else's and is left alone. An ``api_port``
    asked for and taken is refused with :class:`TestbedError`.
    """
    if api_port is None:
        if not any(port_in_use(p) for p in SPP_PORTS):
            return SPP_PORTS
        say(f"  SPP's ports {'/'.join(map(str, SPP_PORTS))} are in use (another spp-ctl?): left alone,")
        say("  the demo runs its own spp-ctl on free ports")
        return free_port(), free_port(), free_port()
    if port_in_use(api_port):
        raise TestbedError(
            f"port {api_port} is in use (another spp-ctl?). The demo starts its own spp-ctl and "
            "never drives one it did not start: give another --api-port, or none to pick a free one"
        )
    if api_port == SPP_PORTS[0] and not any(port_in_use(p) for p in SPP_PORTS[1:]):
        return SPP_PORTS
    return api_port, free_port(), free_port()


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
    ap.add_argument(
        "--api-port",
        type=int,
        help="REST port of the demo's own spp-ctl (default: 7777 when SPP's ports are free, else a free one)",
    )
    ap.add_argument(
        "--file-prefix",
        default=f"demo{os.getpid()}",
        help="file prefix of the demo's instance (default: demo<pid>)",
    )
    ap.add_argument("--seconds", type=int, default=3, help="how long to show each traffic run")
    ap.add_argument("--keep", action="store_true", help="keep everything running until Enter or Ctrl-C")
    ap.add_argument("--no-netns", action="store_true", help="skip the namespace/ping part even as root")
    args = ap.parse_args(argv)
    try:
        check_file_prefix(args.file_prefix)
    except ValueError as e:
        ap.error(str(e))

    use_netns = os.geteuid() == 0 and not args.no_netns and shutil.which("ip") is not None
    hosts = list(demo_hosts(args.file_prefix)) if use_netns else []
    host_a = hosts[0] if hosts else None
    made: list[VethHost] = []
    try:
        step("Starting spp-ctl, spp-primary and two spp-nfv")
        api_port, pri_port, sec_port = choose_ports(args.api_port)
        for h in hosts:
            h.create()
            made.append(h)
        with Testbed(
            ifaces=[h.outer for h in hosts],
            nb_rings=4,
            api_port=api_port,
            pri_port=pri_port,
            sec_port=sec_port,
            prefix=args.file_prefix,
        ) as bed:
            say(
                f"  spp-ctl REST API on http://127.0.0.1:{bed.api_port}/v1 (wire ports {bed.pri_port}, "
                f"{bed.sec_port})"
            )
            phys = ", ".join(f"phy:{i} = {h.outer}" for i, h in enumerate(hosts)) or "none"
            say(f"  spp-primary: file prefix {bed.prefix}, 4 rings; phy ports: {phys}")
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

            if host_a is not None:
                step(f"ping from namespace {hosts[0].ns} to {hosts[1].ns} through phy:0 <-> phy:1")
                nfv1.reset()
                nfv1.patch("phy:0", "phy:1")
                nfv1.patch("phy:1", "phy:0")
                nfv1.forward()
                ping = host_a.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.2")
                for line in ping.stdout.strip().splitlines():
                    say("  " + line)
                pst = bed.primary_status()["phy_ports"]
                say(f"  phy:0 rx {pst[0]['rx']} tx {pst[0]['tx']}; phy:1 rx {pst[1]['rx']} tx {pst[1]['tx']}")
                if ping.returncode != 0:
                    bed.keep_logs = True
                    say(f"  ping did not get through: the logs stay in {bed.log_dir}")
            else:
                step("Skipping the namespace/ping part")
                say("  (it needs root to create network namespaces: ./scripts/demo.sh asks sudo for it)")

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
    except (TestbedError, FileExistsError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None) or ""
        say(f"spp-demo: {e} {detail}".rstrip())
        return 1
    finally:
        for h in made:
            h.destroy()
        if made:
            say("  namespaces removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
