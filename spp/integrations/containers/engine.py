"""The container engine sppc drives: podman (preferred, with runc) or docker (its own dockerd).

Everything here builds argv lists; nothing goes through a shell. :class:`Engine` knows how to
prefix a sub-command (``podman run``, ``docker -H unix://... run``) and the options this host
needs on every ``run`` (podman: ``--runtime runc --ulimit nofile=20000:20000 --ulimit
nproc=32768:32768``). docker is reached through a dockerd of our own (:func:`start_dockerd`), with
its own data root and no iptables or bridge, so it never touches the host's docker or firewall.

Every container sppc starts carries the label ``spp.sppc=1`` (plus ``spp.app``), so listing and
removing act on ours only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

LABEL = "spp.sppc"
PODMAN_RUN_OPTS = ("--runtime", "runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
DOCKERD_ROOT = Path("/var/lib/spp-docker")
DOCKERD_RUN = Path("/run/spp-docker")


class EngineError(RuntimeError):
    """The engine is missing or refused; the message says which command and why."""


@dataclass(frozen=True)
class Engine:
    """One container engine and how to call it.

    ``kind`` is ``podman`` or ``docker``; ``host`` the docker daemon socket (``-H``);
    ``run_opts`` what every ``run`` gets before sppc's own options."""

    kind: str = "podman"
    run_opts: tuple[str, ...] = PODMAN_RUN_OPTS
    host: str | None = None
    build_opts: tuple[str, ...] = field(default=())
    privileged_opts: tuple[str, ...] = ("--privileged",)

    @classmethod
    def named(cls, kind: str | None = None, runtime: str | None = None) -> Engine:
        """The engine ``kind`` (default ``$SPPC_ENGINE``, else podman when installed, else docker).

        podman gets ``--runtime RUNTIME`` (default runc when installed) and the ulimits; docker
        talks to the dockerd of :func:`start_dockerd` (``$SPPC_DOCKER_HOST`` overrides)."""
        kind = kind or os.environ.get("SPPC_ENGINE") or ("podman" if shutil.which("podman") else "docker")
        if kind == "podman":
            rt = runtime or os.environ.get("SPPC_RUNTIME") or ("runc" if shutil.which("runc") else "")
            opts: tuple[str, ...] = ("--runtime", rt) if rt else ()
            ulimits = PODMAN_RUN_OPTS[2:]
            return cls("podman", opts + ulimits, None, opts + ulimits)
        if kind == "docker":
            host = os.environ.get("SPPC_DOCKER_HOST") or f"unix://{DOCKERD_RUN / 'docker.sock'}"
            opts = ("--runtime", runtime) if runtime else ()
            return cls("docker", opts, host, (), docker_privileged_opts())
        raise EngineError(f"unknown engine '{kind}' (podman or docker)")

    def command(self, *words: str) -> list[str]:
        """``podman WORDS`` / ``docker -H HOST WORDS``."""
        base = [self.kind]
        if self.host:
            base += ["-H", self.host]
        return [*base, *words]

    def available(self) -> bool:
        return shutil.which(self.kind) is not None

    def call(self, *words: str, timeout: float = 120.0, check: bool = True) -> str:
        """Run an engine command, returning stdout; an error names the command and its message."""
        argv = self.command(*words)
        if not self.available():
            raise EngineError(f"{self.kind} is not installed (scripts/install.sh installs it)")
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EngineError(f"'{' '.join(argv[:4])} ...' did not finish in {timeout:.0f} s") from None
        if check and r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise EngineError(f"{' '.join(argv[:3])} failed: {msg[-1] if msg else r.returncode}")
        return r.stdout

    def image_exists(self, name: str) -> bool:
        if self.kind == "podman":
            return subprocess.run(self.command("image", "exists", name), capture_output=True).returncode == 0
        return subprocess.run(self.command("image", "inspect", name), capture_output=True).returncode == 0

    def state(self, name: str) -> str:
        """``running``, ``exited``, ``created``... or ``missing``."""
        r = subprocess.run(
            self.command("inspect", "--format", "{{.State.Status}}", name), capture_output=True, text=True
        )
        return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "missing"

    def remove(self, name: str, timeout: int = 5) -> bool:
        """Stop (SIGTERM, then SIGKILL after ``timeout`` s) and remove container ``name``.
        Returns whether it existed."""
        if self.state(name) == "missing":
            return False
        subprocess.run(self.command("stop", "-t", str(timeout), name), capture_output=True)
        subprocess.run(self.command("rm", "-f", name), capture_output=True)
        return True

    def ours(self) -> list[dict[str, str]]:
        """Containers sppc started (label ``spp.sppc``), with their state."""
        out = self.call("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}")
        return [{"name": name, "state": self.state(name)} for name in out.split()]


#: Linux capability names by number (capability.h), for docker's --cap-drop.
CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip


def missing_capabilities() -> list[str]:
    """Capabilities this host does not give us (our bounding set), e.g. SYS_RESOURCE in a sandbox."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapBnd:"):
                bnd = int(line.split()[1], 16)
                return [name for i, name in enumerate(CAP_NAMES) if not bnd >> i & 1]
    except (OSError, ValueError):
        pass
    return []


def docker_privileged_opts() -> tuple[str, ...]:
    """docker's ``--privileged`` asks runc for every capability and fails where one is withheld
    (podman copes); then ask for all the host gives, without seccomp filtering, plus /dev/net/tun."""
    missing = missing_capabilities()
    if not missing:
        return ("--privileged",)
    opts: list[str] = ["--cap-add", "ALL"]
    for name in missing:
        opts += ["--cap-drop", name]
    opts += ["--security-opt", "seccomp=unconfined"]
    if Path("/dev/net/tun").exists():
        opts += ["--device", "/dev/net/tun"]
    return tuple(opts)


def dockerd_argv(root: Path = DOCKERD_ROOT, run: Path = DOCKERD_RUN) -> list[str]:
    """A dockerd of our own: own data/exec root and socket, no iptables rules, no bridge."""
    return [
        "dockerd",
        "--data-root",
        str(root),
        "--exec-root",
        str(run / "exec"),
        "--pidfile",
        str(run / "dockerd.pid"),
        "-H",
        f"unix://{run / 'docker.sock'}",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
    ]


def start_dockerd(root: Path = DOCKERD_ROOT, run: Path = DOCKERD_RUN, timeout: float = 60.0) -> int:
    """Start our dockerd (if not running) and wait until it answers; returns its pid."""
    pid = dockerd_pid(run)
    if pid is not None:
        return pid
    run.mkdir(parents=True, exist_ok=True)
    log = open(run / "dockerd.log", "ab")  # noqa: SIM115 - handed to the daemon
    proc = subprocess.Popen(
        dockerd_argv(root, run), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    log.close()
    engine = Engine("docker", (), f"unix://{run / 'docker.sock'}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (run / "dockerd.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise EngineError(f"dockerd exited with {proc.returncode}: {' | '.join(tail)}")
        if subprocess.run(engine.command("version"), capture_output=True).returncode == 0:
            return proc.pid
        time.sleep(0.2)
    stop_dockerd(run)
    raise EngineError(f"dockerd did not answer within {timeout:.0f} s (log {run / 'dockerd.log'})")


def dockerd_pid(run: Path = DOCKERD_RUN) -> int | None:
    try:
        pid = int((run / "dockerd.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(run / "dockerd.pid").encode() in cmdline else None


def stop_dockerd(run: Path = DOCKERD_RUN, timeout: float = 20.0) -> bool:
    pid = dockerd_pid(run)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    # dockerd leaves its default network namespace bind-mounted under its exec root.
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1]
        if target.startswith(str(run) + "/"):
            subprocess.run(["umount", target], capture_output=True)
    return True
