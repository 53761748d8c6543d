"""Network namespaces joined to the root namespace by veth pairs: stand-in hosts for the demo and
for benchmarks. Every command is an argv list for ``ip``; nothing goes through a shell.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass, field


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass
class VethHost:
    """Namespace ``ns`` holding ``inner`` (with ``address``), whose peer ``outer`` stays in the root
    namespace, up and ready to be given to the primary as a phy port."""

    ns: str
    outer: str
    inner: str
    address: str | None = None
    mac: str | None = None
    created: list[str] = field(default_factory=list)

    def create(self) -> VethHost:
        """Make the namespace and the pair; refuse (OSError) if either name is taken, since
        that namespace or link is someone else's."""
        if (
            self.ns in ip("netns", "list").stdout.split()
            or ip("link", "show", self.outer, check=False).returncode == 0
        ):
            raise FileExistsError(
                f"namespace {self.ns} or link {self.outer} exists already: not ours to reuse"
            )
        ip("netns", "add", self.ns)
        self.created.append("ns")
        ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner, "netns", self.ns)
        self.created.append("link")
        if self.mac:
            ip("-n", self.ns, "link", "set", self.inner, "address", self.mac)
        ip("-n", self.ns, "link", "set", "lo", "up")
        ip("-n", self.ns, "link", "set", self.inner, "up")
        if self.address:
            ip("-n", self.ns, "addr", "add", self.address, "dev", self.inner)
        ip("link", "set", self.outer, "up")
        return self

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True, timeout=timeout
        )

    def destroy(self) -> None:
        """Remove what :meth:`create` made, and nothing else."""
        with contextlib.suppress(OSError):
            if "link" in self.created:
                ip("link", "del", self.outer, check=False)
            if "ns" in self.created:
                ip("netns", "del", self.ns, check=False)
        self.created.clear()

    def __enter__(self) -> VethHost:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
