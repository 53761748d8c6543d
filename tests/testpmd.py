"""dpdk-testpmd as a test peer: started with its own file prefix, no hugepages, driven through
its interactive prompt, its forward statistics parsed, its runtime directory removed afterwards."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

TESTPMD = shutil.which("dpdk-testpmd")

needs_testpmd = pytest.mark.skipif(TESTPMD is None, reason="dpdk-testpmd (Debian dpdk-dev) is not installed")


class Testpmd:
    """``dpdk-testpmd -l 0,1 --no-huge --vdev VDEV -- -i --forward-mode=MODE``."""

    __test__ = False

    def __init__(
        self,
        vdev: str,
        mode: str,
        log_path: Path,
        extra: list[str] | None = None,
        eal: list[str] | None = None,
    ) -> None:
        """``eal`` replaces the default ``-l 0,1 --no-huge -m 512`` (memory from memfd, which
        virtio-user can share; no hugepages needed)."""
        self.prefix = f"spptp{os.getpid()}{uuid.uuid4().hex[:6]}"
        self.log_path = log_path
        argv = [
            "stdbuf", "-o0", TESTPMD or "dpdk-testpmd",
            *(eal or ["-l", "0,1", "--no-huge", "-m", "512"]), "--no-pci", "--file-prefix", self.prefix,
            "--log-level", "pmd.net.virtio.*:info", "--vdev", vdev,
            "--", "-i", f"--forward-mode={mode}", "--nb-cores=1", "--total-num-mbufs=8192",
            *(extra or []),
        ]  # fmt: skip
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT)

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_output(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = re.search(pattern, self.output())
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"testpmd: no '{pattern}' in its output:\n{self.output()[-3000:]}")

    def port_packets(self) -> tuple[int, int]:
        """``show port stats 0``: (RX-packets, TX-packets) so far."""
        mark = len(self.output())
        self.command("show port stats 0")
        end = time.monotonic() + 10
        pattern = re.compile(r"RX-packets:\s*(\d+).*?TX-packets:\s*(\d+)", re.S)
        while time.monotonic() < end:
            m = pattern.search(self.output(), mark)
            if m:
                return int(m[1]), int(m[2])
            time.sleep(0.02)
        raise AssertionError(f"testpmd: no port stats:\n{self.output()[-2000:]}")

    def stop_stats(self) -> dict[str, int]:
        """``stop``: the accumulated forward statistics of the run."""
        self.command("stop")
        m = self.wait_output(
            r"Accumulated forward statistics for all ports\+*\s*RX-packets:\s*(\d+)\s*RX-dropped:\s*(\d+)"
            r"\s*RX-total:\s*\d+\s*TX-packets:\s*(\d+)\s*TX-dropped:\s*(\d+)"
        )
        return {"rx": int(m[1]), "rx_drop": int(m[2]), "tx": int(m[3]), "tx_drop": int(m[4])}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(f"/var/run/dpdk/{self.prefix}", ignore_errors=True)

    def __enter__(self) -> Testpmd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
