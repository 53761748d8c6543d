"""``spp up / ps / apply / down`` with real processes, namespaces and traffic (root).

One bed: two namespaces whose veths are the primary's phy:0 and phy:1, and two nfv joining them
through rings (phy:0 -> ring:0 -> phy:1 and back through ring:1); a ping crosses it. Then a
changed file is applied while a ping runs, a process is killed and comes back with its wiring,
and ``spp down`` leaves nothing behind (the session's leak check looks too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from spp.integrations.testbed import free_port
from tests.netutil import is_root, unique_tag

pytestmark = [pytest.mark.root, pytest.mark.skipif(not is_root(), reason="needs root for namespaces")]


class Bed:
    def __init__(self, tmp: Path) -> None:
        tag = unique_tag()
        self.tag = tag
        self.state = Path(f"/tmp/spp-bedstate-{tag}")
        self.prefix = f"bed{tag}"
        self.name = f"t{tag}"
        self.ns = (f"sppt{tag}a", f"sppt{tag}b")
        self.links = (f"spt{tag}a", f"spt{tag}b")
        self.api, self.pri, self.sec = free_port(), free_port(), free_port()
        self.dir = tmp

    def header(self, interfaces: bool = True) -> str:
        text = (
            f"name: {self.name}\nfile_prefix: {self.prefix}\n"
            f"ctl: {{api_port: {self.api}, pri_port: {self.pri}, sec_port: {self.sec}}}\n"
            "primary:\n  lcores: 0\n  rings: 4\n"
        )
        if interfaces:
            text += f"  interfaces: [{self.links[0]}, {self.links[1]}]\nnamespaces:\n"
            for i, (ns, link) in enumerate(zip(self.ns, self.links, strict=True)):
                text += f"  - {{name: {ns}, outer: {link}, address: 10.199.0.{i + 1}/24}}\n"
        return text

    def file(self, name: str, text: str) -> str:
        path = self.dir / name
        path.write_text(text)
        return str(path)

    def spp(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [
            sys.executable,
            "-m",
            "spp.control.cli.main",
            args[0],
            "--state-dir",
            str(self.state),
            *args[1:],
        ]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        if check:
            assert r.returncode == 0, r.stdout + r.stderr
        return r

    def ps(self) -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in json.loads(self.spp("ps", "--json").stdout)}

    def ping(self, count: int = 3, interval: str = "0.2") -> subprocess.CompletedProcess[str]:
        argv = [
            "ip",
            "netns",
            "exec",
            self.ns[0],
            "ping",
            "-c",
            str(count),
            "-i",
            interval,
            "-W",
            "2",
            "10.199.0.2",
        ]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def rings(self) -> list[dict[str, int]]:
        return httpx.get(f"http://127.0.0.1:{self.api}/v1/primary/status", timeout=10).json()["ring_ports"]

    def leftovers(self) -> list[str]:
        left = []
        if self.state.exists():
            left.append(str(self.state))
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        left += [ns for ns in self.ns if ns in netns]
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        left += [link for link in self.links if f" {link}:" in links or f" {link}@" in links]
        if Path(f"/dev/shm/spp_{self.prefix}.seg").exists():
            left.append("segment")
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if self.prefix.encode() in cmd or str(self.state).encode() in cmd:
                    left.append(f"process {pid}: {cmd[:100]!r}")
        tmux = subprocess.run(
            ["tmux", "-L", f"spp-{self.name}", "list-sessions"], capture_output=True, text=True
        )
        if tmux.returncode == 0:
            left.append(f"tmux server spp-{self.name}")
        return left


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    b = Bed(tmp_path)
    try:
        yield b
    finally:
        if b.state.exists():
            b.spp("down", check=False)


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_up_ping_apply_restart_down(bed: Bed) -> None:
    nfvs = (
        "secondaries:\n"
        "  - nfv: 1\n    ports: [ring:0, ring:1]\n    patches: [phy:0 -> ring:0, ring:1 -> phy:0]\n"
        "  - nfv: 2\n    ports: [ring:0, ring:1]\n    patches: [ring:0 -> phy:1, phy:1 -> ring:1]\n"
    )
    first = bed.file("bed.yml", bed.header() + nfvs)
    out = bed.spp("up", first).stdout
    assert "is up" in out
    rows = bed.ps()
    assert list(rows) == ["spp-ctl", "primary", "nfv 1", "nfv 2"]
    assert {r["state"] for r in rows.values()} == {"running"}
    assert all(Path(r["log"]).stat().st_size > 0 for r in rows.values())
    ping = bed.ping()
    assert ping.returncode == 0, ping.stdout + ping.stderr

    # A changed file: nfv 1 gains two rings and a patch between them, nfv 3 is added idling.
    changed = nfvs.replace(
        "  - nfv: 1\n    ports: [ring:0, ring:1]\n    patches: [phy:0 -> ring:0, ring:1 -> phy:0]\n",
        "  - nfv: 1\n    ports: [ring:0, ring:1, ring:2, ring:3]\n"
        "    patches: [phy:0 -> ring:0, ring:1 -> phy:0, ring:2 -> ring:3]\n",
    )
    changed += (
        "  - nfv: 3\n    ports: [ring:3, nullpmd:0]\n    patches: [ring:3 -> nullpmd:0]\n    forward: false\n"
    )
    second = bed.file("bed2.yml", bed.header() + changed)
    planned = bed.spp("apply", "--dry-run", second).stdout.splitlines()
    assert sorted(planned) == sorted(
        "would: " + s
        for s in [
            "start nfv 3",
            "nfv 1: add ring:2",
            "nfv 1: add ring:3",
            "nfv 1: patch ring:2 -> ring:3",
            "nfv 3: add ring:3",
            "nfv 3: add nullpmd:0",
            "nfv 3: patch ring:3 -> nullpmd:0",
        ]
    )
    before = bed.rings()
    ping_proc = subprocess.Popen(
        ["ip", "netns", "exec", bed.ns[0], "ping", "-c", "150", "-i", "0.02", "-W", "2", "10.199.0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(0.5)
        applied = bed.spp("apply", second).stdout.splitlines()
        mid = bed.rings()
        ping_out = ping_proc.communicate(timeout=120)[0]
    finally:
        if ping_proc.poll() is None:
            ping_proc.kill()
            ping_proc.wait()
    assert ["would: " + s for s in applied] == planned
    assert "150 packets transmitted, 150 received" in ping_out, ping_out  # nothing lost meanwhile
    assert bed.ping().returncode == 0
    after = bed.rings()
    for ring in (0, 1):  # the untouched path counted through the change and after it, dropping nothing
        assert before[ring]["tx"] < mid[ring]["tx"] < after[ring]["tx"]
        assert after[ring]["tx_drop"] == before[ring]["tx_drop"]
    rows2 = bed.ps()
    for name in ("spp-ctl", "primary", "nfv 1", "nfv 2"):
        assert rows2[name]["pid"] == rows[name]["pid"], f"{name} was restarted"
    assert rows2["nfv 3"]["state"] == "idling"

    # Back to the first file: only what was added goes.
    back = bed.spp("apply", first).stdout.splitlines()
    assert sorted(back) == sorted(["stop nfv 3", "nfv 1: del ring:2", "nfv 1: del ring:3"])

    # A killed nfv comes back (restart policy on-failure) with its ports and patches.
    os.kill(rows["nfv 1"]["pid"], 9)
    _wait(
        lambda: bed.ps()["nfv 1"]["restarts"] == 1 and bed.ps()["nfv 1"]["state"] == "running", 30, "restart"
    )
    ping = bed.ping()
    assert ping.returncode == 0, ping.stdout + ping.stderr

    down = bed.spp("down").stdout.splitlines()
    assert down[:2] == ["stop nfv 2", "stop nfv 1"] and down[-1] == "bed down"
    assert (
        down.index("stop primary") < down.index("stop spp-ctl") < down.index(f"remove namespace {bed.ns[0]}")
    )
    assert bed.leftovers() == []


def test_tmux_windows_and_restart_policy(bed: Bed) -> None:
    text = bed.header(interfaces=False) + (
        "secondaries:\n"
        "  - nfv: 1\n    ports: [ring:0, ring:1]\n    patches: [ring:0 -> ring:1]\n"
        '  - nfv: 2\n    restart: "no"\n    ports: [ring:2]\n    forward: false\n'
    )
    r = bed.spp("up", "--tmux", bed.file("bed.yml", text))  # returns: no terminal, no attach
    assert f"tmux -L spp-{bed.name} attach" in r.stdout
    windows = subprocess.run(
        ["tmux", "-L", f"spp-{bed.name}", "list-windows", "-F", "#{window_name} #{pane_pid}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    rows = bed.ps()
    assert [w.split()[0] for w in windows] == ["shell", "spp-ctl", "primary", "nfv", "nfv"]
    assert [w.rsplit(" ", 1) for w in windows[1:]] == [[n, str(r["pid"])] for n, r in rows.items()]
    assert rows["nfv 1"]["state"] == "running" and rows["nfv 2"]["state"] == "idling"
    _wait(lambda: "connected to spp-ctl" in Path(rows["nfv 1"]["log"]).read_text(), 10, "the pane's log")

    os.kill(rows["nfv 2"]["pid"], 9)  # restart: "no"
    _wait(lambda: bed.ps()["nfv 2"]["state"] == "exited", 15, "nfv 2 to be seen exited")
    time.sleep(1.5)
    assert bed.ps()["nfv 2"]["restarts"] == 0
    bed.spp("down")
    assert bed.leftovers() == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_containers_and_a_vm_named_in_the_bed_pass_traffic(bed: Bed, tmp_path: Path, vm_image: Path) -> None:
    """One bed: spp-l2fwd in a container (sppc, podman + runc) on two of the nfv's vhost ports,
    frames from spp-pktgen in a second container going out and coming back counted; and a VM on a
    third vhost port, pinged from a namespace through the same nfv; ``spp down`` stops the
    container and the VM before the nfv they use, and removes the VM's state. (One VM boot
    serves both: a bed with the VM alone used to boot its own.)"""
    from spp.integrations.containers import Engine, build, images, state
    from spp.integrations.vm import manager

    engine = Engine.named("podman", "runc")
    image = images.build(engine)
    guest = vm_image
    socks = tmp_path / "socks"
    socks.mkdir()
    header = bed.header().replace("  rings: 4\n", f"  rings: 1\n  vhost_dir: {socks}\n")
    text = header.replace(f"[{bed.links[0]}, {bed.links[1]}]", f"[{bed.links[0]}]")
    text = text.replace(f"  - {{name: {bed.ns[1]}, outer: {bed.links[1]}, address: 10.199.0.2/24}}\n", "")
    text += (
        "secondaries:\n"
        "  - nfv: 1\n    ports: [vhost:1, vhost:2, vhost:3, vhost:4]\n"
        "    patches: [vhost:1 -> vhost:2, vhost:3 -> vhost:1, phy:0 -> vhost:4, vhost:4 -> phy:0]\n"
        "containers:\n"
        f"  - {{name: l2fwd, app: spp-l2fwd, dev_uids: [vhost:2, vhost:3], image: {image}, engine: podman,"
        " args: [-p, '0x3']}\n"
        f"vms:\n  - {{id: 8, image: {guest}, accel: tcg, nics: [{{port: vhost:4, ip: 10.199.0.2/24}}]}}\n"
    )
    bed.spp("up", bed.file("bed.yml", text))
    rows = bed.ps()
    assert rows["container l2fwd"]["state"] == "running" and rows["vm 8"]["state"] == "running"
    root = manager.default_state_root(bed.prefix)
    manager.exec_in(root, 8, "true", timeout=60, boot_timeout=240)
    _wait(lambda: bed.ping(count=1).returncode == 0, 60, "the guest to answer a ping")
    ping = bed.ping()
    assert ping.returncode == 0, ping.stdout + ping.stderr

    def nfv_stats() -> dict[str, dict[str, Any]]:
        st = httpx.get(f"http://127.0.0.1:{bed.api}/v1/nfvs/1", timeout=10).json()
        return {s["port"]: s for s in st.get("stats", [])}

    _wait(lambda: nfv_stats()["vhost:2"].get("connected"), 60, "l2fwd on vhost:2")
    pg = build(
        "spp-pktgen",
        ["-d", "vhost:1", "--name", f"sppc-{bed.name}-pg", "-ci", image, "--vhost-dir", str(socks), "--",
         "--count", "2000", "--rate", "5000", "--drain", "3", "--json"],
        engine=engine,
        mode="attached",
    )  # fmt: skip
    r = subprocess.run(pg.argv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    stats = nfv_stats()
    assert result["tx"]["frames"] == 2000 and stats["vhost:1"]["rx"] == 2000
    assert result["rx"]["received"] == stats["vhost:1"]["tx"] > 0, (result, stats)
    down = bed.spp("down").stdout.splitlines()
    assert down[:2] == ["stop container l2fwd", "stop vm 8"] and "stop nfv 1" in down[2:]
    assert state(f"sppc-{bed.name}-l2fwd", engine) == "missing"
    assert not (root / "8").exists()
    assert bed.leftovers() == []
