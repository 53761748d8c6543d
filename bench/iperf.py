"""Benchmark: TCP throughput and UDP zero-drop rates with iperf3 between two namespaces, through
our nfv (``phy:0 <-> phy:1``) against a Linux bridge and dpdk-testpmd joining the same veths.

    sudo PYTHONPATH=. python bench/iperf.py [--runs 3] [--seconds 5] [--sides bridge,testpmd,nfv]

TCP: ``iperf3 -c B -t SECONDS`` from namespace A, offloads (TSO/GSO/GRO, checksums) on every veth
end as a host would have them (``--offloads off`` turns them off: testpmd's ``net_af_packet``
cannot carry aggregates or partial checksums); the figure is the receiver's rate. UDP: for payloads of 64 and
1,400 bytes, the highest ``-b`` rate at which the receiver reports no loss over a ``--trial``
second trial, by bisection between 0 and the rate the sender reached unthrottled; with
``--udp-criterion forwarder``, the highest rate at which the *forwarder* lost nothing (frames A's
veth sent against frames the forwarder put on B's veth), whatever B's namespace then dropped: on a
loaded machine iperf3's receiver drops first, and that says nothing about the forwarder. Every
trial records where frames were lost (``fwd_lost``: in the forwarder; ``host_lost``: in B's
namespace, ``rcvbuf_drops`` of them for a full receive socket). Sides run in a different order
each run; figures are medians, and ratios are ours over each peer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peers import B_IP, forwarder, make_hosts, set_offloads
from phy_vs_testpmd import Host, hugepages, machine

SIDES = ("bridge", "testpmd", "nfv")


def iperf(a: Host, b: Host, client_args: list[str], seconds: float) -> dict[str, Any]:
    """One iperf3 test from A to B; the JSON ``end`` section of the client's report."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", b.ns, "iperf3", "-s", "-1", "-B", B_IP],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(0.3)
        argv = ["ip", "netns", "exec", a.ns, "iperf3", "-J", "--connect-timeout", "3000", "-c", B_IP]
        argv += ["-t", str(seconds), *client_args]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 15, check=False)
        except subprocess.TimeoutExpired:
            return {"error": "stalled: no report (the connection carried nothing)"}
        report = json.loads(out.stdout or "{}")
        if "end" not in report:
            return {"error": report.get("error", out.stderr.strip() or "no report")}
        return report["end"]
    finally:
        server.kill()
        server.wait(5)


def tcp_rate(a: Host, b: Host, seconds: float) -> float:
    end = iperf(a, b, [], seconds)
    return float(end.get("sum_received", {}).get("bits_per_second", 0.0))


def _stages(a: Host, b: Host) -> dict[str, int]:
    """Counters along the path A -> forwarder -> B: frames A's end sent, frames the forwarder
    put on B's veth, frames B's end received, and datagrams B's UDP layer dropped for a full
    socket buffer (iperf3's receiver not keeping up) or took."""
    assert b.holder is not None
    c: dict[str, int] = {"a_tx": a.counters()["tx"], "b_rx": b.counters()["rx"]}
    c["fwd_tx"] = int(Path(f"/sys/class/net/{b.outer}/statistics/tx_packets").read_text())
    with open(f"/proc/{b.holder.pid}/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    udp = dict(zip(rows[0][1:], (int(x) for x in rows[1][1:]), strict=True))
    c["rcvbuf_drops"] = udp["RcvbufErrors"]
    c["delivered"] = udp["InDatagrams"]
    return c


def udp_trial(a: Host, b: Host, length: int, bps: float, seconds: float) -> dict[str, int]:
    """One paced UDP trial: iperf3's ``packets`` sent and ``lost`` (-1: no report), and where
    frames were lost: ``fwd_lost`` between A's veth and B's (in the forwarder), ``host_lost``
    in B's namespace (``rcvbuf_drops``: the receiving socket was full)."""
    before = _stages(a, b)
    end = iperf(a, b, ["-u", "-l", str(length), "-b", str(int(bps))], seconds)
    after = _stages(a, b)
    d = {k: after[k] - before[k] for k in before}
    s = end.get("sum", {})
    return {
        "packets": int(s.get("packets", 0)),
        "lost": int(s.get("lost_packets", -1)),
        # (A's end also carries iperf3's TCP control connection: a few frames, both counted)
        "fwd_lost": d["a_tx"] - d["fwd_tx"],
        "host_lost": d["fwd_tx"] - d["b_rx"] + d["rcvbuf_drops"],
        "rcvbuf_drops": d["rcvbuf_drops"],
    }


def _clean(t: dict[str, int], criterion: str) -> bool:
    if t["lost"] < 0 or t["packets"] <= 0:
        return False
    if criterion == "forwarder":
        return t["fwd_lost"] <= 0
    return t["lost"] == 0


def udp_zero_drop(
    a: Host, b: Host, length: int, seconds: float, steps: int, criterion: str
) -> dict[str, Any]:
    """Highest paced rate (packets/s) with no loss, by bisection under the unthrottled rate.

    ``criterion``: ``end-to-end`` (iperf3's receiver saw every datagram) or ``forwarder`` (the
    forwarder lost nothing, whatever B's namespace then dropped: on a loaded machine iperf3's
    receiver is what drops first). Each result carries the drops by stage of the unthrottled
    trial and of the trial at the rate found.
    """
    top = udp_trial(a, b, length, 0, seconds)  # -b 0: as fast as it can
    top_pps = top["packets"] / seconds
    out: dict[str, Any] = {"unthrottled_pps": top_pps, "unthrottled": top, "criterion": criterion}
    if top["lost"] < 0:  # no report at all: the path carries nothing (iperf3's control is TCP)
        return {**out, "zero_drop_pps": 0.0, "at_zero_drop": top}
    if _clean(top, criterion):
        return {**out, "zero_drop_pps": top_pps, "at_zero_drop": top}
    lo, hi = 0.0, top_pps
    best: dict[str, int] = {"packets": 0}
    for _ in range(steps):
        mid = (lo + hi) / 2
        t = udp_trial(a, b, length, mid * length * 8, seconds)
        if _clean(t, criterion):
            lo = mid
            if t["packets"] > best["packets"]:
                best = t
        else:
            hi = mid
    # The rate the sender reached in the best clean trial: iperf3's pacing falls short of the
    # rate asked for when its sender runs out of CPU.
    return {**out, "zero_drop_pps": best["packets"] / seconds, "asked_pps": lo, "at_zero_drop": best}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="TCP test length")
    ap.add_argument("--trial", type=float, default=2.0, help="UDP trial length")
    ap.add_argument("--steps", type=int, default=6, help="UDP bisection steps")
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--no-udp", action="store_true")
    ap.add_argument(
        "--udp-criterion",
        choices=("end-to-end", "forwarder"),
        default="end-to-end",
        help="zero drop means: iperf3 lost nothing, or the forwarder lost nothing (B may drop)",
    )
    ap.add_argument("--no-huge", action="store_true", help="testpmd on anonymous memory (no hugepages)")
    ap.add_argument(
        "--offloads",
        choices=("on", "off"),
        default="on",
        help="TSO/GSO/GRO and checksum offloads on the veths (testpmd's af_packet PMD needs off)",
    )
    args = ap.parse_args()
    sides = args.sides.split(",")
    per: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    tag = f"{os.getpid() % 10000}"
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iperf")))
        hugedir: Path | None = None
        note = "testpmd with --no-huge -m 1024"
        if not args.no_huge:
            hugedir, note = stack.enter_context(hugepages(tmp))
        a, b = make_hosts(tag)
        try:
            set_offloads((a, b), args.offloads == "on")
            for run in range(args.runs):
                order = sides[run % len(sides) :] + sides[: run % len(sides)]
                for side in order:
                    with forwarder(side, a, b, tmp, hugedir, f"{tag}{run}"):
                        time.sleep(0.5)
                        r: dict[str, Any] = {"tcp_gbps": tcp_rate(a, b, args.seconds) / 1e9}
                        if not args.no_udp:
                            for length in (64, 1400):
                                r[f"udp{length}"] = udp_zero_drop(
                                    a, b, length, args.trial, args.steps, args.udp_criterion
                                )
                    per[side].append(r)
                    print(f"run {run + 1} {side}: {json.dumps(r)}", file=sys.stderr)
        finally:
            a.destroy()
            b.destroy()
    summary: dict[str, dict[str, float]] = {}
    for side, rs in per.items():
        summary[side] = {"tcp_gbps": round(statistics.median(r["tcp_gbps"] for r in rs), 3)}
        if not args.no_udp:
            for length in (64, 1400):
                zd = statistics.median(r[f"udp{length}"]["zero_drop_pps"] for r in rs)
                summary[side][f"udp{length}_zero_drop_kpps"] = round(zd / 1e3, 1)
                # Where the unthrottled trials lost frames: the forwarder, or B's namespace.
                for stage in ("fwd_lost", "host_lost"):
                    lost = [r[f"udp{length}"]["unthrottled"].get(stage, 0) for r in rs]
                    summary[side][f"udp{length}_unthrottled_{stage}"] = int(statistics.median(lost))
    ratios: dict[str, float] = {}
    if "nfv" in summary:
        for peer in (s for s in summary if s != "nfv"):
            for key, ours in summary["nfv"].items():
                if "_unthrottled_" in key:
                    continue
                theirs = summary[peer][key]
                ratios[f"{key} nfv/{peer}"] = round(ours / theirs, 2) if theirs else float("nan")
    result = {
        "offloads": args.offloads,
        "udp_criterion": args.udp_criterion,
        "runs": per,
        "summary": summary,
        "ratios": ratios,
        "hugepages": note,
        "machine": machine(),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
