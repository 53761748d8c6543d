"""``sppc app NAME ...``: the ``podman run`` / ``docker run`` command of one containerised app.

:func:`build` turns an app name and SPP container-tool options into a :class:`Launch` (container
name, image, argv); it has no side effects, so ``--dry-run``, the bed's validation and the tests
all use it. :func:`start` runs a Launch, :func:`stop` removes the container by name.

Three families of app, mounted differently:

* **SPP processes** (spp-primary, spp-nfv, spp-vf, spp-mirror, spp-pcap) share the host's
  ``/dev/shm`` (the segment ``spp_<prefix>.seg``), ``/tmp`` (vhost sockets, pcap files), its
  network (phy ports are host interfaces, spp-ctl is reached on 127.0.0.1) and its PID namespace
  (the segment's process table names pids; ring doorbells take eventfds with ``pidfd_getfd``).
  They all use the instance's file prefix: ``--file-prefix``, else ``$SPP_FILE_PREFIX``, else ``spp``.
* **Traffic tools** (spp-pktgen, spp-l2fwd) open ``virtio_user:N`` on the nfv's ``vhost:N``
  socket, mounted at ``/var/run/spp/sockN``, with a private ``/dev/shm`` for their own buffer pool,
  no network, and the lcores of ``-l``/``-c`` as the container's cpuset.
* **DPDK apps** (testpmd, generic) get ``--vdev net_virtio_userN,queues=Q,path=/var/run/usvhostN``
  on ``/tmp/sockN`` mounted there (SPP's convention), no hugepages unless ``--hugepages``
  (``--no-huge`` then: virtio-user shares memfd memory), ``--no-pci`` unless ``-w`` names devices,
  and a file prefix of their own, ``sppc-<name|app>-<16 hex>``, never the instance's.

Deliberate differences from SPP's launchers: ``-ip`` beats ``$SPP_CTL_IP`` (SPP: the other way
round) and defaults to 127.0.0.1 (host network); ``-i ID`` for vf and mirror as for nfv; the
primary's ``-p`` is optional (rings only); a bad option is an error with a non-zero status;
``--vdev`` and ``-v`` are used (SPP parsed and dropped them); every container is named
(``--name``, else ``sppc-<prefix>-nfv1``, ``sppc-testpmd-<8 hex>``) and labelled ``spp.sppc=1``;
no ``sudo``; ``memif:N`` is refused (no memif port here).

Using it from Python (what ``spp up`` does for a container in a bed file)::

    from spp.integrations.containers import build, start, stop, state
    launch = build("spp-l2fwd", ["-l", "1", "-d", "vhost:2,vhost:3", "-p", "0x3", "--name", "l2fwd1"])
    print(launch.shell())          # the command as shell words
    start(launch)                  # podman run -d ... (returns once the engine has created it)
    state(launch.name)             # "running", "exited", ... or "missing"
    stop(launch.name)              # stop, then remove the container

``build(..., mode="attached")`` gives a command that stays in the foreground and removes its
container when it ends (``--rm``, no ``-d``), for a supervisor that keeps the process and its log.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from spp.integrations.containers.engine import LABEL, Engine, EngineError
from spp.integrations.containers.images import DEFAULT_IMAGE

SPP_APPS = {
    "spp-primary": "primary",
    "spp-nfv": "nfv",
    "spp-vf": "vf",
    "spp-mirror": "mirror",
    "spp-pcap": "pcap",
}
TOOL_APPS = ("spp-pktgen", "spp-l2fwd")
DPDK_APPS = ("testpmd", "generic")
APPS = (*SPP_APPS, *TOOL_APPS, *DPDK_APPS)
ALIASES = {
    "primary": "spp-primary",
    "nfv": "spp-nfv",
    "vf": "spp-vf",
    "mirror": "spp-mirror",
    "pcap": "spp-pcap",
    "pktgen": "spp-pktgen",
    "l2fwd": "spp-l2fwd",
    "dpdk-testpmd": "testpmd",
}
DEV_TYPES = ("vhost", "tap")
TAP_PREFIX = "spp_tap"
TOOL_SOCK_DIR = "/var/run/spp"
MODES = ("detach", "foreground", "attached")


class SppcError(ValueError):
    """Options that cannot make a container command; the message names the option."""


@dataclass(frozen=True)
class Device:
    """One ``-d`` entry: ``vhost:N`` (a vhost-user socket of the panel) or ``tap:N``."""

    type: str
    num: int

    def __str__(self) -> str:
        return f"{self.type}:{self.num}"


@dataclass
class Launch:
    """What :func:`build` made: run ``argv`` to start container ``name`` from ``image``."""

    app: str
    name: str
    image: str
    argv: list[str]
    file_prefix: str | None
    engine: Engine = field(default_factory=Engine)
    inner: list[str] = field(default_factory=list)  # the command run inside the container
    mode: str = "detach"
    dry_run: bool = False  # --dry-run was among the options

    def shell(self) -> str:
        """The command as shell words, one option (with its value) per line, as SPP printed it."""
        head = len(self.engine.command("run"))
        lines = [shlex.join(self.argv[:head])]
        pending = False  # the last line is an option still waiting for its value
        for word in self.argv[head:]:
            quoted = shlex.quote(word)
            if pending and not word.startswith("-"):
                lines[-1] += " " + quoted
                pending = False
            else:
                lines.append(quoted)
                pending = word.startswith("-") and word not in _FLAGS and "=" not in word
        return " \\\n ".join(lines)


_FLAGS = frozenset(
    {
        "-d", "-it", "-i", "--rm", "--privileged", "--", "--no-huge", "--no-pci", "--single-file-segments",
        "--vhost-client", "--interactive", "--auto-start", "--tx-first", "--json", "--swap",
        "--oneway", "--mac-updating",
    }
)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise SppcError(f"{self.prog}: {message}")


def parse_devices(text: str | None) -> list[Device]:
    """``vhost:1,vhost:2,tap:1`` (or SPP's older ``1,3-5``, vhost ids) -> devices, in order."""
    if not text:
        return []
    out: list[Device] = []
    for part in text.split(","):
        part = part.strip()
        kind, sep, num = part.partition(":")
        if not sep:  # the 2018 form: vhost ids, ranges allowed
            lo, dash, hi = part.partition("-")
            try:
                nums = range(int(lo), int(hi) + 1) if dash else [int(lo)]
            except ValueError:
                raise SppcError(f"-d {text}: '{part}' is not TYPE:N or an id range") from None
            out += [Device("vhost", n) for n in nums]
            continue
        if kind == "memif":
            raise SppcError(f"-d {text}: memif:N is not supported here (no memif port); use vhost:N")
        if kind not in DEV_TYPES:
            raise SppcError(f"-d {text}: '{kind}' is not supported (vhost:N or tap:N)")
        if not num.isdigit() or int(num) > 999:
            raise SppcError(f"-d {text}: '{part}' needs a number 0..999")
        out.append(Device(kind, int(num)))
    if len(set(out)) != len(out):
        raise SppcError(f"-d {text}: a device is listed twice")
    return out


def cores_of(core_list: str | None, core_mask: str | None) -> list[int]:
    """The lcores of ``-l`` (``1-3,5``) or ``-c`` (a mask; bit 0 is core 0, unlike SPP's)."""
    if core_mask:
        try:
            mask = int(core_mask, 16)
        except ValueError:
            raise SppcError(f"-c {core_mask}: not a hex mask") from None
        cores = [i for i in range(mask.bit_length()) if mask >> i & 1]
    elif core_list:
        cores = []
        try:
            for part in core_list.split(","):
                lo, dash, hi = part.partition("-")
                cores += range(int(lo), int(hi) + 1) if dash else [int(lo)]
        except ValueError:
            raise SppcError(f"-l {core_list}: expected e.g. 1-3,5") from None
    else:
        return []
    if not cores or min(cores) < 0:
        raise SppcError(f"no lcore in -l/-c ({core_list or core_mask})")
    return sorted(set(cores))


def _common_parser(app: str) -> _Parser:
    p = _Parser(prog=f"sppc app {app}", add_help=True, allow_abbrev=False)
    eal = p.add_argument_group("EAL (DPDK) options")
    eal.add_argument("-l", "--core-list", help="lcores, e.g. 1-2 (-c wins)")
    eal.add_argument("-c", "--core-mask", help="lcores as a hex mask")
    eal.add_argument("-m", "--mem", type=int, default=1024, help="memory in MB (default %(default)s)")
    eal.add_argument("--vdev", nargs="*", default=[], help="further --vdev devices, passed as given")
    eal.add_argument("--socket-mem", help="per-socket memory (instead of -m)")
    eal.add_argument("-b", "--pci-blacklist", nargs="*", default=[], help="PCI devices to skip")
    eal.add_argument("-w", "--pci-whitelist", nargs="*", default=[], help="PCI devices to use (only these)")
    eal.add_argument("--single-file-segments", action="store_true")
    eal.add_argument("--nof-memchan", type=int, default=4, help="memory channels (default %(default)s)")
    ac = p.add_argument_group("app container options")
    ac.add_argument("-d", "--dev-uids", help="devices, e.g. vhost:1,vhost:2 or tap:1")
    ac.add_argument("-v", "--volume", nargs="*", default=[], help="further HOST:CONTAINER mounts")
    ac.add_argument("-nq", "--nof-queues", type=int, default=1, help="queues per virtio device")
    ac.add_argument("--no-privileged", action="store_true", help="run without --privileged")
    ac.add_argument("--hugepages", action="store_true", help="mount /dev/hugepages (else --no-huge)")
    ac.add_argument("--vhost-dir", default="/tmp", help="host directory of the sockN files (%(default)s)")
    ac.add_argument("--network", help="container network (default: host for SPP and tap, else none)")
    sp = p.add_argument_group("sppc options")
    sp.add_argument("--dist-name", default="debian", help="image distribution (only debian)")
    sp.add_argument("--dist-ver", default="12", help="image distribution version (only 12)")
    sp.add_argument("--workdir", help="working directory in the container")
    sp.add_argument("--name", help="container name")
    sp.add_argument("-ci", "--container-image", help=f"image (default {DEFAULT_IMAGE})")
    sp.add_argument("-fg", "--foreground", action="store_true", help="run in the foreground (-it)")
    sp.add_argument("--dry-run", action="store_true", help="print the command and run nothing")
    sp.add_argument("--engine", choices=("podman", "docker"), help="container engine")
    sp.add_argument("--runtime", help="OCI runtime for podman (default runc)")
    return p


def _ctl_args(p: argparse.ArgumentParser, port: int) -> None:
    g = p.add_argument_group("spp-ctl")
    g.add_argument("-ip", "--ctl-ip", help="spp-ctl address (beats $SPP_CTL_IP; default 127.0.0.1)")
    g.add_argument("--ctl-port", type=int, default=port, help="spp-ctl port (default %(default)s)")
    g.add_argument("--file-prefix", help="the instance's file prefix (default $SPP_FILE_PREFIX or spp)")


def app_parser(app: str) -> _Parser:
    """The option parser of ``sppc app APP`` (for ``--help`` and validation)."""
    p = _common_parser(app)
    g = p.add_argument_group(f"{app} options")
    if app == "spp-primary":
        g.add_argument("-n", "--nof-ring", type=int, default=10, help="rings (default %(default)s)")
        g.add_argument("-p", "--port-mask", help="phy ports among --iface, e.g. 0x03 (default: all)")
        g.add_argument("--iface", action="append", default=[], help="host interface for the next phy:N")
        _ctl_args(p, 5555)
    elif app in SPP_APPS:
        g.add_argument("-i", "--sec-id", type=int, required=True, help="secondary id (1..127)")
        g.add_argument("--vhost-client", action="store_true", help="vhost ports connect as client")
        if app == "spp-pcap":
            g.add_argument("-cp", "--capture-port", required=True, help="phy:N or ring:N to capture")
            g.add_argument("--out-dir", default="/tmp", help="host directory of the captures")
            g.add_argument("--fsize", help="file size limit")
        _ctl_args(p, 6666)
    elif app == "spp-l2fwd":
        g.add_argument("-p", "--port-mask", default="0x03", help="two devices of -d to forward between")
    elif app == "spp-pktgen":
        g.add_argument("--tx", help="port to send on (default: virtio_user of the first -d device)")
        g.add_argument("--rx", help="port to count on (default: that of the last -d device)")
    elif app == "testpmd":
        g.add_argument("-i", "--interactive", action="store_true")
        g.add_argument("-a", "--auto-start", action="store_true")
        g.add_argument("--tx-first", action="store_true")
        g.add_argument("--forward-mode", choices=FORWARD_MODES)
        g.add_argument("--port-topology", choices=("paired", "chained", "loop"))
        g.add_argument("--nb-cores", type=int)
        g.add_argument("--total-num-mbufs", type=int)
        g.add_argument("--stats-period", type=int)
        g.add_argument("--burst", type=int)
        g.add_argument("--rxq", type=int)
        g.add_argument("--txq", type=int)
        g.add_argument("--max-pkt-len", type=int)
    elif app == "generic":
        g.add_argument("--bin", required=True, help="the program in the image (with -l/-c: a DPDK app)")
    g.add_argument("app_args", nargs="*", help="further options of the program, after --")
    return p


FORWARD_MODES = (
    "io", "mac", "macswap", "flowgen", "rxonly", "txonly", "csum", "icmpecho", "ieee1588", "tm", "noisy",
)  # fmt: skip


def canonical(app: str) -> str:
    name = ALIASES.get(app, app)
    if name not in APPS:
        raise SppcError(f"unknown app '{app}' (one of {', '.join(APPS)})")
    return name


def build(
    app: str,
    words: list[str],
    *,
    engine: Engine | None = None,
    mode: str | None = None,
    token: Callable[[int], str] = secrets.token_hex,
    env: dict[str, str] | None = None,
) -> Launch:
    """The container command for ``sppc app APP WORDS``. No side effects.

    ``mode``: ``detach`` (``-d``, the default), ``foreground`` (``-it``, what ``-fg`` asks for)
    or ``attached`` (foreground, ``--rm``, no terminal: for a supervisor). ``token`` makes the
    random parts of names (tests pass a fixed one); ``env`` replaces ``os.environ`` for
    ``SPP_CTL_IP`` / ``SPP_FILE_PREFIX``."""
    app = canonical(app)
    env = os.environ if env is None else env
    args = app_parser(app).parse_args(words)
    if args.dist_name != "debian" or args.dist_ver not in ("12", "bookworm", "latest"):
        raise SppcError(f"--dist-name {args.dist_name} --dist-ver {args.dist_ver}: only debian 12 is built")
    if mode is None:
        mode = "foreground" if args.foreground else "detach"
    if mode not in MODES:
        raise SppcError(f"mode '{mode}' (one of {', '.join(MODES)})")
    if engine is None:
        engine = Engine.named(args.engine, args.runtime)
    if args.nof_queues < 1:
        raise SppcError(f"-nq {args.nof_queues}: at least 1")
    if args.pci_blacklist and args.pci_whitelist:
        raise SppcError("-b and -w cannot be used together")
    devs = parse_devices(args.dev_uids)
    cores = cores_of(args.core_list, args.core_mask)
    image = args.container_image or DEFAULT_IMAGE
    vhost_dir = os.path.abspath(args.vhost_dir)

    opts: list[str] = {"detach": ["-d"], "foreground": ["-it"], "attached": ["--rm"]}[mode]
    if not args.no_privileged:
        opts += engine.privileged_opts
    if args.hugepages:
        opts += ["-v", "/dev/hugepages:/dev/hugepages"]
    if app in SPP_APPS:
        prefix = args.file_prefix or env.get("SPP_FILE_PREFIX") or "spp"
        name = args.name or f"sppc-{prefix}-{SPP_APPS[app]}" + (
            "" if app == "spp-primary" else str(args.sec_id)
        )
        opts += ["-v", "/dev/shm:/dev/shm", "-v", "/tmp:/tmp", "--pid", "host"]
        network = args.network or "host"
        inner = _spp_command(app, args, devs, cores, prefix, vhost_dir, env)
        if not vhost_dir.startswith("/tmp/") and vhost_dir != "/tmp":
            opts += ["-v", f"{vhost_dir}:{vhost_dir}"]
        if app == "spp-pcap" and not os.path.abspath(args.out_dir).startswith("/tmp"):
            opts += ["-v", f"{os.path.abspath(args.out_dir)}:{os.path.abspath(args.out_dir)}"]
        file_prefix: str | None = prefix
    else:
        hexid = token(8)
        name = args.name or f"sppc-{app.removeprefix('spp-')}-{hexid[:8]}"
        network = args.network or ("host" if any(d.type == "tap" for d in devs) else "none")
        if app in TOOL_APPS:
            file_prefix = None
            opts += ["--shm-size", "256m"]
            if cores:
                opts += ["--cpuset-cpus", ",".join(map(str, cores))]
            for d in devs:
                if d.type == "vhost":
                    opts += ["-v", f"{vhost_dir}/sock{d.num}:{TOOL_SOCK_DIR}/sock{d.num}"]
            inner = _tool_command(app, args, devs)
        else:
            file_prefix = f"sppc-{args.name or app}-{hexid}"
            for d in devs:
                if d.type == "vhost":
                    opts += ["-v", f"{vhost_dir}/sock{d.num}:/var/run/usvhost{d.num}"]
            inner = _dpdk_command(app, args, devs, cores, file_prefix)
    for vol in args.volume:
        if ":" not in vol:
            raise SppcError(f"-v {vol}: expected HOST:CONTAINER")
        opts += ["-v", vol]
    if args.workdir:
        opts += ["--workdir", args.workdir]
    opts += ["--name", name, "--network", network, "--label", f"{LABEL}=1", "--label", f"spp.app={app}"]
    argv = [*engine.command("run"), *engine.run_opts, *opts, image, *inner]
    return Launch(app, name, image, argv, file_prefix, engine, inner, mode, args.dry_run)


def _eal(args: argparse.Namespace, cores: list[int], proc_type: str) -> list[str]:
    if not cores:
        raise SppcError("an lcore list is needed: -l LIST or -c MASK")
    out = ["-c", args.core_mask] if args.core_mask else ["-l", args.core_list]
    out += ["-n", str(args.nof_memchan)]
    out += ["--socket-mem", args.socket_mem] if args.socket_mem else ["-m", str(args.mem)]
    out += ["--proc-type", proc_type]
    return out


def _ctl_ip(args: argparse.Namespace, env: os._Environ[str] | dict[str, str]) -> str:
    return args.ctl_ip or env.get("SPP_CTL_IP") or "127.0.0.1"


def _spp_command(
    app: str,
    args: argparse.Namespace,
    devs: list[Device],
    cores: list[int],
    prefix: str,
    vhost_dir: str,
    env: os._Environ[str] | dict[str, str],
) -> list[str]:
    primary = app == "spp-primary"
    out = [app, *_eal(args, cores, "primary" if primary else "secondary")]
    for d in devs:
        if d.type == "vhost":
            out += ["--vdev", f"eth_vhost{d.num},iface={vhost_dir}/sock{d.num}"]
        # tap:N needs no vdev: the process makes the device on 'add tap:N' (host network)
    for v in args.vdev:
        out += ["--vdev", v]
    out += ["--file-prefix", prefix, "--"]
    server = f"{_ctl_ip(args, env)}:{args.ctl_port}"
    if primary:
        out += ["-p", args.port_mask] if args.port_mask else []
        out += ["-n", str(args.nof_ring), "-s", server]
        for iface in args.iface:
            out += ["--iface", iface]
    else:
        if not 1 <= args.sec_id <= 127:
            raise SppcError(f"-i {args.sec_id}: a secondary id is 1..127")
        out += ["-n" if app == "spp-nfv" else "--client-id", str(args.sec_id), "-s", server]
        if app == "spp-pcap":
            out += ["-c", args.capture_port, "--out-dir", os.path.abspath(args.out_dir)]
            if args.fsize:
                out += ["--fsize", args.fsize]
        if args.vhost_client:
            out.append("--vhost-client")
        if vhost_dir != "/tmp":
            out += ["--vhost-dir", vhost_dir]
    return out + args.app_args


def _port_of(d: Device) -> str:
    return f"virtio_user:{d.num}" if d.type == "vhost" else f"tap:{d.num}"


def _tool_command(app: str, args: argparse.Namespace, devs: list[Device]) -> list[str]:
    out = [app]
    if any(d.type == "vhost" for d in devs):
        out += ["--vhost-dir", TOOL_SOCK_DIR]
    for d in devs:
        if d.type == "tap":
            out += ["--tap-name", f"tap:{d.num}={TAP_PREFIX}{d.num}"]
    if app == "spp-l2fwd":
        try:
            mask = int(args.port_mask, 16)
        except ValueError:
            raise SppcError(f"-p {args.port_mask}: not a hex mask") from None
        chosen = [i for i in range(mask.bit_length()) if mask >> i & 1]
        if len(chosen) != 2:
            raise SppcError(f"-p {args.port_mask}: spp-l2fwd forwards between exactly two devices")
        if chosen[-1] >= len(devs):
            raise SppcError(f"-p {args.port_mask}: only {len(devs)} device(s) given with -d")
        return out + [_port_of(devs[i]) for i in chosen] + args.app_args
    tx = args.tx or (_port_of(devs[0]) if devs else None)
    rx = args.rx or (_port_of(devs[-1]) if devs else None)
    if tx is None and rx is None:
        raise SppcError("spp-pktgen needs a device (-d vhost:N) or --tx/--rx")
    if tx:
        out += ["--tx", tx]
    if rx:
        out += ["--rx", rx]
    return out + args.app_args


def _dpdk_command(
    app: str, args: argparse.Namespace, devs: list[Device], cores: list[int], prefix: str
) -> list[str]:
    program = "dpdk-testpmd" if app == "testpmd" else args.bin
    if app == "generic" and not cores:
        return [program, *args.app_args]  # not a DPDK app: no EAL options
    out = [program, *_eal(args, cores, "auto")]
    if not args.hugepages:
        out.append("--no-huge")
    if not args.pci_whitelist:
        out.append("--no-pci")
    for d in devs:
        if d.type == "vhost":
            out += ["--vdev", f"net_virtio_user{d.num},queues={args.nof_queues},path=/var/run/usvhost{d.num}"]
        else:
            out += ["--vdev", f"net_tap{d.num},iface={TAP_PREFIX}{d.num}"]
    for v in args.vdev:
        out += ["--vdev", v]
    for b in args.pci_blacklist:
        out += ["-b", b]
    for w in args.pci_whitelist:
        out += ["-w", w]
    if args.single_file_segments:
        out.append("--single-file-segments")
    out += ["--file-prefix", prefix, "--"]
    if app == "testpmd":
        out += _testpmd_options(args)
    return out + args.app_args


def _testpmd_options(args: argparse.Namespace) -> list[str]:
    if args.tx_first and args.interactive:
        raise SppcError("--tx-first cannot be used with -i (testpmd refuses it)")
    checks = {
        "nb_cores": (1, 1024),
        "total_num_mbufs": (1025, 1 << 31),
        "stats_period": (0, 86400),
        "burst": (1, 512),
        "rxq": (1, 65535),
        "txq": (1, 65535),
        "max_pkt_len": (64, 65535),
    }
    out = []
    if args.interactive:
        out.append("--interactive")
    if args.auto_start:
        out.append("--auto-start")
    if args.tx_first:
        out.append("--tx-first")
    for key in ("forward_mode", "port_topology"):
        if getattr(args, key):
            out.append(f"--{key.replace('_', '-')}={getattr(args, key)}")
    for key, (lo, hi) in checks.items():
        value = getattr(args, key)
        if value is None:
            continue
        if not lo <= value <= hi:
            raise SppcError(f"--{key.replace('_', '-')} {value}: must be {lo}..{hi}")
        opt = f"--{key.replace('_', '-')}"
        out += [opt, str(value)] if key == "stats_period" else [f"{opt}={value}"]
    return out


def start(launch: Launch, timeout: float = 120.0) -> str:
    """Run a detached launch; returns the container id. An existing container of that name is an
    error (stop it first), so nothing is replaced by accident."""
    if launch.engine.state(launch.name) != "missing":
        raise EngineError(f"container '{launch.name}' exists already (sppc stop {launch.name})")
    try:
        r = subprocess.run(launch.argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise EngineError(f"{launch.engine.kind} is not installed") from None
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        raise EngineError(f"{launch.engine.kind} run {launch.name}: {lines[-1] if lines else r.returncode}")
    return r.stdout.strip()


def stop(name: str, engine: Engine | None = None, timeout: int = 5) -> bool:
    """Stop and remove container ``name``; returns whether it existed."""
    return (engine or Engine.named()).remove(name, timeout)


def state(name: str, engine: Engine | None = None) -> str:
    """``running``, ``exited``, ``created``, ... or ``missing``."""
    return (engine or Engine.named()).state(name)
