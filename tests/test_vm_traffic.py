"""Two real QEMU guests (``spp vm image``, TCG) on vhost:N ports: offloads negotiated, TCP between
them through spp_nfv, spp_vf (classified by MAC) and spp_mirror (a copy to a pcap file), TCP
between a guest and a namespace through a phy port, and a guest reset or killed and restarted
while the nfv keeps forwarding its other patch.

One pair of guests serves the whole module (TCG boots are slow on a loaded machine). The SPP side
is in client mode (``--vhost-client``) and QEMU owns the sockets, as with networking-spp: so a
port can move from the nfv to a vf or mirror process and back, and QEMU takes the new back-end.
Every test leaves the rig as it found it: both guests on the nfv, patched to each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from spp.integrations.testbed import Secondary, Testbed, wait_for
from spp.integrations.vm import manager
from spp.integrations.vm.image import READY_MARK
from spp.integrations.vm.qemu import QEMU, Nic, VmSpec, default_mac, resolve_accel
from tests.netutil import VethNs, is_root, veth_pair_in_netns, wait_until
from tests.test_offload_e2e import tcp_checksum_report, wait_stable
from tests.traffic import _TCP_RECV, _last_json, _ready, _spawn
from tests.vmutil import type_on_console

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(not is_root(), reason="needs root for namespaces"),
    pytest.mark.skipif(
        subprocess.run(["which", QEMU], capture_output=True).returncode != 0, reason="no QEMU"
    ),
]

BOOT = 600.0  # seconds a TCG guest may take to boot on a loaded two-core machine
GUEST_NET = "10.88.0"  # guest <-> guest
NS_NET = "10.88.1"  # guest 1's second NIC <-> a namespace behind phy:2
# virtio-net feature bits, as the guest's /sys/bus/virtio/devices/*/features shows them (bit i is
# character i)
F_CSUM, F_GUEST_CSUM, F_GUEST_TSO4, F_HOST_TSO4, F_MRG_RXBUF = 0, 1, 7, 11, 15


@dataclass
class Guest:
    vm_id: int
    spec: VmSpec
    root: Path

    @property
    def mac(self) -> str:
        return self.spec.nics[0].mac

    def sh(self, command: str, timeout: float = 120) -> str:
        r = manager.exec_in(self.root, self.vm_id, command, timeout=timeout, boot_timeout=BOOT)
        assert r.status == 0, f"vm {self.vm_id}: {command!r} -> {r.status}: {r.output}"
        return r.output

    def boots(self) -> int:
        """How many times the guest has printed its ready mark."""
        log = self.spec.serial_log
        return log.read_bytes().count(READY_MARK.encode()) if log.exists() else 0

    def start(self) -> None:
        manager.start(self.spec, timeout=120)

    def wait_booted(self, count: int) -> None:
        wait_for(lambda: self.boots() >= count, BOOT, f"vm {self.vm_id} boot #{count}", interval=0.5)

    def features(self) -> str:
        """The virtio-net features the guest driver negotiated, as a string of 0/1 by bit."""
        return self.sh("cat /sys/bus/virtio/devices/*/features").split()[0]


@dataclass
class Rig:
    bed: Testbed
    nfv: Secondary
    socks: Path
    guests: dict[int, Guest]
    hosts: list[VethNs]  # a, b: the nfv's other patch (phy:0 <-> phy:1); c: behind phy:2
    next_port: list[int] = field(default_factory=lambda: [5001])

    def port(self) -> int:
        self.next_port[0] += 1
        return self.next_port[0]


NFV_PATCHES = [("vhost:1", "vhost:2"), ("vhost:2", "vhost:1"), ("vhost:3", "phy:2"), ("phy:2", "vhost:3")]
OTHER_PATCHES = [("phy:0", "phy:1"), ("phy:1", "phy:0")]


@pytest.fixture(scope="module")
def rig(vm_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("vm-traffic")
    socks, state = tmp / "socks", tmp / "vms"
    socks.mkdir()
    with contextlib.ExitStack() as stack:
        hosts = [
            stack.enter_context(veth_pair_in_netns(ns_ip=ip, offloads=True))
            for ip in ("198.51.100.1/24", "198.51.100.2/24", f"{NS_NET}.2/24")
        ]
        bed = stack.enter_context(Testbed(ifaces=[h.host_if for h in hosts], nb_rings=4, log_dir=tmp / "bed"))
        nfv = bed.start_nfv(1, extra=["--vhost-client", "--vhost-dir", str(socks)])
        for port in ("vhost:1", "vhost:2", "vhost:3"):
            nfv.add(port)
        for src, dst in NFV_PATCHES + OTHER_PATCHES:
            nfv.patch(src, dst)
        nfv.forward()
        # TCG unless told otherwise: /dev/kvm opens here but QEMU's KVM set-up fails on this host
        accel = resolve_accel(os.environ.get("SPP_TEST_VM_ACCEL", "tcg"))
        guests = {}
        for vm_id, nics in (
            (1, [(1, f"{GUEST_NET}.1/24"), (3, f"{NS_NET}.1/24")]),
            (2, [(2, f"{GUEST_NET}.2/24")]),
        ):
            spec = VmSpec(
                vm_id,
                state / str(vm_id),
                [Nic(n, str(socks / f"sock{n}"), default_mac(vm_id, n), ip) for n, ip in nics],
                accel=accel,
                server=True,
                kernel=vm_image / "vmlinuz",
                initrd=vm_image / "initrd.img",
            )
            guests[vm_id] = Guest(vm_id, spec, state)
        try:
            for g in guests.values():
                g.start()
            for g in guests.values():
                g.wait_booted(1)
            yield Rig(bed, nfv, socks, guests, hosts)
        finally:
            for vm in manager.list_vms(state):
                manager.stop(state, vm["id"])


def stats(rig: Rig) -> dict[str, dict]:
    return rig.nfv.port_stats()


def listen(port: int) -> str:
    """The guest command that receives one TCP connection on ``port`` into /tmp/rx."""
    hold = "[ -p /tmp/hold ] || mkfifo /tmp/hold"
    return f"rm -f /tmp/rx; {hold}; nc -l -p {port} <> /tmp/hold > /tmp/rx & echo $! > /tmp/rx.pid"


def guest_tcp(rig: Rig, src: Guest, dst: Guest, dst_ip: str, mbytes: int = 8) -> None:
    """``mbytes`` MiB of random data from src to dst with busybox nc; sha256 equal at both ends.
    (The listener's stdin is a FIFO it holds open itself: a background job reading the console
    would be stopped as soon as the next command is typed, and an empty stdin would make it
    half-close the connection, which ends busybox nc at the sending end.)"""
    port = rig.port()
    dst.sh(listen(port))
    want = src.sh(
        f"dd if=/dev/urandom of=/tmp/tx bs=64k count={16 * mbytes} 2>/dev/null; sha256sum < /tmp/tx"
    )
    src.sh(
        f"for i in 1 2 3 4 5 6 7 8 9 10; do nc {dst_ip} {port} < /tmp/tx && break; sleep 1; done", timeout=600
    )
    dst.sh("while kill -0 $(cat /tmp/rx.pid) 2>/dev/null; do sleep 0.2; done", timeout=300)
    got = dst.sh("sha256sum < /tmp/rx; wc -c < /tmp/rx")
    assert got.split()[0] == want.split()[0], (got, want)
    assert int(got.split()[-1]) == mbytes << 20


def test_guests_negotiate_offloads_and_ping_each_other(rig):
    g1, g2 = rig.guests[1], rig.guests[2]
    for g in (g1, g2):
        f = g.features()
        for bit in (F_CSUM, F_GUEST_CSUM, F_GUEST_TSO4, F_HOST_TSO4, F_MRG_RXBUF):
            assert f[bit] == "1", (g.vm_id, bit, f)
    out = g1.sh(f"ping -c 3 -W 10 {GUEST_NET}.2", timeout=120)
    assert "3 packets transmitted, 3 packets received" in out
    out = g2.sh(f"ping -c 2 -W 10 {GUEST_NET}.1", timeout=120)
    assert "2 packets transmitted, 2 packets received" in out


def test_tcp_between_guests_through_nfv_keeps_aggregates_whole(rig):
    g1, g2 = rig.guests[1], rig.guests[2]
    before = stats(rig)
    guest_tcp(rig, g1, g2, f"{GUEST_NET}.2", 4)
    guest_tcp(rig, g2, g1, f"{GUEST_NET}.1", 4)
    after = stats(rig)
    for port in ("vhost:1", "vhost:2"):
        frames = after[port]["rx"] - before[port]["rx"]
        # 4 MiB in wire-sized frames would be more than 2900 of them: the guests' TSO aggregates
        # crossed whole (both negotiated HOST_ and GUEST_TSO4), nothing was cut up in between
        assert 0 < frames < 2000, (port, frames)
        assert not after[port]["xstats"].get("sw_gso"), after[port]
        assert after[port]["rx_drop"] == 0 and after[port]["errors"] == 0, after[port]


def test_tcp_between_a_guest_and_a_namespace_through_phy(rig):
    """guest 1 (second NIC, vhost:3) <-> nfv <-> phy:2 <-> namespace: the kernel and the guest hand
    each other aggregates through the panel (PACKET_VNET_HDR on one side, virtio-net on the other)."""
    g1, ns = rig.guests[1], rig.hosts[2]
    before = stats(rig)
    port = rig.port()
    recv = _spawn(ns.ns, _TCP_RECV, [str(port), "300"])
    try:
        _ready(recv)
        want = g1.sh("dd if=/dev/urandom of=/tmp/tx bs=64k count=64 2>/dev/null; sha256sum < /tmp/tx")
        g1.sh(f"nc {NS_NET}.2 {port} < /tmp/tx", timeout=600)
        got = _last_json(recv, 300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            recv.kill()
    assert got["bytes"] == 4 << 20 and got["sha256"] == want.split()[0], got
    mid = stats(rig)
    frames = mid["vhost:3"]["rx"] - before["vhost:3"]["rx"]
    # fewer frames than 4 MiB of wire-sized segments (> 2900): the guest's aggregates went to the
    # kernel whole, as PACKET_VNET_HDR aggregates, and the panel cut nothing up
    assert 0 < frames < 2000 and mid["phy:2"]["tx"] - before["phy:2"]["tx"] == frames, (before, mid)
    assert not mid["phy:2"]["xstats"].get("sw_gso"), mid["phy:2"]
    # and back: the namespace sends, the guest hashes
    port = rig.port()
    g1.sh(listen(port))
    data = secrets.token_bytes(4 << 20)
    sender = subprocess.run(
        ["ip", "netns", "exec", ns.ns, "python3", "-c", _SEND, f"{NS_NET}.1", str(port)],
        input=data,
        capture_output=True,
        timeout=600,
    )
    assert sender.returncode == 0, sender.stderr
    g1.sh("while kill -0 $(cat /tmp/rx.pid) 2>/dev/null; do sleep 0.2; done", timeout=300)
    assert g1.sh("sha256sum < /tmp/rx").split()[0] == hashlib.sha256(data).hexdigest()
    st = stats(rig)
    assert st["vhost:3"]["rx_drop"] == 0 and st["vhost:3"]["errors"] == 0


_SEND = r"""
import socket, sys, time
data = sys.stdin.buffer.read()
for attempt in range(20):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
        break
    except OSError:
        time.sleep(1)
s.sendall(data)
s.close()
"""


@contextlib.contextmanager
def guests_moved(rig: Rig) -> Iterator[None]:
    """vhost:1 and vhost:2 leave the nfv for the duration (another process takes them), and come
    back patched as before."""
    nfv = rig.nfv
    nfv.delete("vhost:1")
    nfv.delete("vhost:2")
    try:
        yield
    finally:
        nfv.add("vhost:1")
        nfv.add("vhost:2")
        for src, dst in NFV_PATCHES[:2]:
            nfv.patch(src, dst)
        wait_for(
            lambda: stats(rig)["vhost:1"]["running"] and stats(rig)["vhost:2"]["running"],
            60,
            "the guests back on the nfv",
        )


def launch_worker(rig: Rig, proc_name: str, client_id: int) -> None:
    bed = rig.bed
    body = {
        "proc_name": proc_name,
        "client_id": client_id,
        "eal": {"-l": "0,1", "--proc-type": "secondary", "--file-prefix": bed.prefix},
        "app": {
            "--client-id": str(client_id),
            "-s": f"127.0.0.1:{bed.sec_port}",
            "--vhost-client": None,
            "--vhost-dir": str(rig.socks),
        },
    }
    bed.ok("PUT", "/v1/primary/launch", body)


def test_tcp_between_guests_through_vf_classified_by_mac(rig):
    """spp_vf: merge (vhost:1, vhost:2 -> ring:0), classifier (ring:0 -> by destination MAC)."""
    g1, g2 = rig.guests[1], rig.guests[2]
    with guests_moved(rig):
        launch_worker(rig, "spp_vf", 3)
        vf = rig.bed.vf(3)
        try:
            vf.start("mg", 1, "merge")
            vf.start("cls", 1, "classifier")
            vf.attach("vhost:1", "rx", "mg")
            vf.attach("vhost:2", "rx", "mg")
            vf.attach("ring:0", "tx", "mg")
            vf.attach("ring:0", "rx", "cls")
            vf.attach("vhost:1", "tx", "cls")
            vf.attach("vhost:2", "tx", "cls")
            vf.table_add(g1.mac.lower(), "vhost:1")
            vf.table_add(g2.mac.lower(), "vhost:2")
            guest_tcp(rig, g1, g2, f"{GUEST_NET}.2", 4)
            guest_tcp(rig, g2, g1, f"{GUEST_NET}.1", 4)
            cls = vf.component("cls")
            assert cls["counters"]["tx"] > 0 and cls["counters"]["drop"] == 0, cls
        finally:
            vf.exit()


def test_tcp_between_guests_through_mirror_with_a_pcap_copy(rig):
    """spp_mirror: each guest's frames go to the other guest and a copy to a ring, which the nfv
    records into a pcap port; the copies are written as a wire would carry them (aggregates
    segmented, checksums valid)."""
    g1, g2 = rig.guests[1], rig.guests[2]
    n1, n2 = 900 + os.getpid() % 40, 950 + os.getpid() % 40
    files = [Path(f"/tmp/spp-{d}{n}.pcap") for n in (n1, n2) for d in ("rx", "tx")]
    nfv = rig.nfv
    try:
        for ring, n in (("ring:2", n1), ("ring:3", n2)):
            nfv.add(ring)
            nfv.add(f"pcap:{n}")
            nfv.patch(ring, f"pcap:{n}")
        with guests_moved(rig):
            launch_worker(rig, "spp_mirror", 4)
            mir = rig.bed.mirror(4)
            try:
                mir.wire("m1", 1, "mirror", ["vhost:1"], ["vhost:2", "ring:2"])
                mir.wire("m2", 1, "mirror", ["vhost:2"], ["vhost:1", "ring:3"])
                guest_tcp(rig, g1, g2, f"{GUEST_NET}.2", 4)
                counters = {name: mir.component(name)["counters"] for name in ("m1", "m2")}
            finally:
                mir.exit()
        wait_stable(lambda: (stats(rig)[f"pcap:{n1}"]["tx"], stats(rig)[f"pcap:{n2}"]["tx"]))
        recorded = {n: stats(rig)[f"pcap:{n}"] for n in (n1, n2)}
        for n in (n1, n2):
            nfv.delete(f"pcap:{n}")  # closes the file
        reports = {n: tcp_checksum_report(Path(f"/tmp/spp-tx{n}.pcap")) for n in (n1, n2)}
        for n, rep in reports.items():
            assert rep["frames"] > 0 and not rep["bad"], (n, rep)
            assert rep["longest"] <= 1514, rep
        # 4 MiB of payload from guest 1 is in the first copy, cut to wire size in software
        assert reports[n1]["frames"] > 2800, (reports, counters, recorded)
        assert recorded[n1]["xstats"]["sw_gso"] > 0, recorded
    finally:
        for ring in ("ring:2", "ring:3"):
            with contextlib.suppress(Exception):
                nfv.delete(ring)
        for f in files:
            f.unlink(missing_ok=True)


# -- a guest goes away and comes back; the nfv's other patch does not notice ---------------------


class Pinger:
    """``ping`` between namespaces a and b (through the nfv's phy:0 <-> phy:1 patch) in the
    background, one every 50 ms."""

    def __init__(self, rig: Rig, count: int) -> None:
        a = rig.hosts[0]
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                a.ns,
                "ping",
                "-n",
                "-i",
                "0.05",
                "-W",
                "2",
                "-c",
                str(count),
                "198.51.100.2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def result(self, timeout: float) -> str:
        out, _ = self.proc.communicate(timeout=timeout)
        return out

    @staticmethod
    def lost(out: str) -> list[int]:
        """The requests that got no reply, but for the last one sent: ping stopped by SIGINT
        may have sent it a moment before (about one stop in a hundred, at 50 ms and a 0.5 ms
        round trip), and does not wait for its reply."""
        sent = int(re.search(r"(\d+) packets transmitted", out).group(1))  # type: ignore[union-attr]
        replied = {int(n) for n in re.findall(r"icmp_seq=(\d+) ttl=", out)}
        return [seq for seq in range(1, sent) if seq not in replied]


def other_patch_counters(rig: Rig) -> tuple[int, int]:
    st = stats(rig)
    return st["phy:0"]["rx"], st["phy:1"]["rx"]


def assert_other_patch_undisturbed(rig: Rig, during) -> None:
    """Run ``during()`` while namespaces a and b ping each other through the nfv: the other patch's
    counters keep rising meanwhile, and no ping is lost."""
    before = stats(rig)
    pinger = Pinger(rig, 100_000)
    try:
        wait_for(
            lambda: other_patch_counters(rig)[0] > before["phy:0"]["rx"] + 20, 30, "pings through the nfv"
        )
        samples = [other_patch_counters(rig)]
        for step in during():
            # A step can take less than the ping interval: wait (a little) for the next ping.
            last = samples[-1]
            moved = wait_until(lambda last=last: all(map(int.__gt__, other_patch_counters(rig), last)), 5)
            after = other_patch_counters(rig)
            assert moved, (step, samples, after)
            samples.append(after)
    finally:
        pinger.proc.send_signal(signal.SIGINT)  # ping prints its summary and exits
    out = pinger.result(30)
    assert "packets transmitted" in out and not Pinger.lost(out), out[-3000:]
    after = stats(rig)
    for port in ("phy:0", "phy:1"):
        assert after[port]["tx_drop"] == before[port]["tx_drop"], (port, before[port], after[port])


def test_guest_device_reset_reconnects_while_the_other_patch_forwards(rig):
    """The guest's driver lets go of its NIC and takes it again (unbind/bind: the device is reset
    and everything negotiated anew, with the machine running on): the nfv carries on with the phy
    patch meanwhile, and the guests talk again afterwards."""
    g1, g2 = rig.guests[1], rig.guests[2]
    before = stats(rig)["vhost:2"]
    dev = g2.sh("basename $(readlink /sys/class/net/eth0/device)").strip()
    drv = "/sys/bus/virtio/drivers/virtio_net"

    def during():
        g2.sh(f"echo {dev} > {drv}/unbind")
        yield "driver gone"
        g2.sh(f"echo {dev} > {drv}/bind; sleep 1")
        yield "driver back"
        g2.sh(f"ip link set eth0 up; ip addr add {GUEST_NET}.2/24 dev eth0")
        wait_for(lambda: stats(rig)["vhost:2"]["running"], 60, "the rings running again")
        yield "configured"

    assert_other_patch_undisturbed(rig, during)
    out = g1.sh(f"ping -c 3 -W 10 {GUEST_NET}.2", timeout=120)
    assert "3 packets received" in out
    guest_tcp(rig, g1, g2, f"{GUEST_NET}.2", 2)
    after = stats(rig)["vhost:2"]
    assert after["errors"] == before["errors"] and after["connected"], after


def guest_mappings(rig: Rig) -> tuple[int, int]:
    """What the nfv holds of its guests: (mappings of guest memory, eventfds) in its /proc."""
    pid = rig.bed.pids()["spp_nfv-1"]
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    memory = sum(1 for line in maps if "memfd:mem" in line)
    fds = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            fds += os.readlink(fd) == "anon_inode:[eventfd]"
    return memory, fds


def test_guest_reboot_renegotiates_while_the_other_patch_forwards(rig):
    """Guest 2 reboots from inside (``reboot -f``): QEMU stays and resets the machine, which stops
    vhost:2's rings (GET_VRING_BASE); the new boot's driver negotiates features, memory table and
    rings again on the same connection (the nfv is a --vhost-client here). Meanwhile the nfv
    carries on with the phy patch; afterwards the guests talk again, and the nfv holds no more
    guest memory mappings and eventfds than before (none left of the old boot)."""
    g1, g2 = rig.guests[1], rig.guests[2]
    pid = manager.read_pid(g2.spec.state_dir)
    before = stats(rig)["vhost:2"]
    held = guest_mappings(rig)
    assert held[0] >= 2, held  # both guests' memory is mapped
    boots = g2.boots()
    features = g2.features()

    def during():
        type_on_console(g2.spec.serial_socket, "reboot -f")
        wait_for(lambda: not stats(rig)["vhost:2"]["running"], 60, "the reset to stop vhost:2's rings")
        yield "machine reset"
        g2.wait_booted(boots + 1)
        wait_for(lambda: stats(rig)["vhost:2"]["running"], 60, "vhost:2's rings running again")
        yield "guest booted again, rings running"

    assert_other_patch_undisturbed(rig, during)
    assert manager.read_pid(g2.spec.state_dir) == pid, "QEMU stayed"
    assert manager.status(g2.root, 2)["guest_ready"]
    assert g2.features() == features
    out = g1.sh(f"ping -c 3 -W 10 {GUEST_NET}.2", timeout=120)
    assert "3 packets received" in out
    guest_tcp(rig, g1, g2, f"{GUEST_NET}.2", 2)
    after = stats(rig)["vhost:2"]
    assert after["errors"] == before["errors"] and after["connected"], after
    assert guest_mappings(rig) == held


def test_qemu_killed_and_restarted_reconnects_while_the_other_patch_forwards(rig):
    """QEMU of guest 2 dies (SIGKILL) and starts again, this time with a NIC that does not take
    TCP aggregates (guest_tso4/6=off): the nfv reconnects, keeps the phy patch going meanwhile,
    and now segments guest 1's aggregates for guest 2 in software (counted). Runs last: it leaves
    guest 2 without GUEST_TSO."""
    g1, g2 = rig.guests[1], rig.guests[2]
    pid = manager.read_pid(g2.spec.state_dir)
    assert pid is not None

    def during():
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not stats(rig)["vhost:2"]["connected"], 30, "the nfv to see QEMU go")
        yield "qemu killed"
        time.sleep(1)
        yield "while it is away"
        g2.spec.nic_options = ["guest_tso4=off", "guest_tso6=off", "guest_ecn=off"]
        g2.start()
        wait_for(lambda: stats(rig)["vhost:2"]["running"], 120, "the nfv to reconnect")
        yield "qemu back"
        g2.wait_booted(1)  # a new serial log
        yield "guest booted"

    assert_other_patch_undisturbed(rig, during)
    f = g2.features()
    assert f[F_GUEST_TSO4] == "0" and f[F_GUEST_CSUM] == "1", f
    before = stats(rig)["vhost:2"]["xstats"].get("sw_gso", 0)
    guest_tcp(rig, g1, g2, f"{GUEST_NET}.2", 4)
    xs = stats(rig)["vhost:2"]["xstats"]
    assert xs.get("sw_gso", 0) > before and xs["sw_segments"] > xs["sw_gso"], xs
