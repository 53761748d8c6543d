"""Command lines of the SPP processes: ``[EAL options] -- [application options]``.

SPP's processes are DPDK applications, and scripts, spp-ctl's ``launch`` and spp-runner pass them
DPDK EAL options. We read the few that mean something here (lcores, ``--file-prefix``,
``--vdev``) and accept and ignore DPDK's others, so an existing command line works unchanged;
an option DPDK does not know is an error that names it, never silently dropped.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from spp.instance import check_file_prefix

EAL_WITH_VALUE: tuple[str, ...] = (
    "-c", "-l", "--lcores", "--master-lcore", "--main-lcore", "-s", "-S",
    "-b", "--pci-blacklist", "--block", "-w", "--pci-whitelist", "-a", "--allow", "--vdev", "-d",
    "--proc-type", "-n", "-r", "-m", "--iova-mode", "--log-level", "--file-prefix", "--vfio-intr",
    "--vfio-vf-token", "--base-virtaddr", "--socket-mem", "--socket-limit", "--huge-dir",
    "--mbuf-pool-ops-name", "--trace", "--trace-dir", "--trace-bufsz", "--trace-mode",
    "--force-max-simd-bitwidth",
)  # fmt: skip
"""DPDK EAL options that take a value (``-l 0,1`` or ``--lcores=0,1``)."""

EAL_FLAGS: tuple[str, ...] = (
    "--no-pci", "--no-huge", "--in-memory", "--no-shconf", "--legacy-mem", "--single-file-segments",
    "--huge-unlink", "--match-allocations", "--create-uio-dev", "--vmware-tsc-map", "--no-hpet",
    "--no-telemetry", "--telemetry", "--syslog", "--huge-worker-stack", "--log-color",
    "--log-timestamp", "-v", "-h", "--help",
)  # fmt: skip
"""DPDK EAL options without a value (some take an optional ``=VALUE``, as in DPDK). They mean
nothing here and are accepted and ignored, so DPDK command lines work unchanged."""

EAL_OPTIONS = frozenset(EAL_WITH_VALUE) | frozenset(EAL_FLAGS)
"""Every EAL option a process accepts; anything else is an error naming the option."""


MAX_BUSY_POLL_US = 1_000_000


def busy_poll_us(text: str) -> int:
    """``--busy-poll-us``: whole microseconds, 0 .. :data:`MAX_BUSY_POLL_US`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of microseconds") from None
    if not 0 <= value <= MAX_BUSY_POLL_US:
        raise argparse.ArgumentTypeError(f"{value} is out of range 0..{MAX_BUSY_POLL_US}")
    return value


class OptionError(ValueError):
    """A command line that cannot be used; the message names the option."""


@dataclass
class EalOptions:
    lcores: list[int] = field(default_factory=lambda: [0])
    main_lcore: int | None = None  # default: the lowest lcore, as DPDK
    file_prefix: str = field(default_factory=lambda: os.environ.get("SPP_FILE_PREFIX", "spp"))
    vdevs: list[str] = field(default_factory=list)
    proc_type: str = "auto"


def split_eal(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split at the first ``--``; without one, everything is application options."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return [], argv


def parse_lcore_list(text: str) -> list[int]:
    """``0,2-4`` -> [0, 2, 3, 4]; also DPDK's ``--lcores`` plain forms."""
    out: list[int] = []
    try:
        for part in text.replace("(", "").replace(")", "").split(","):
            part = part.split("@")[0].strip()
            if not part:
                continue
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise OptionError(f"invalid lcore list '{text}'") from None
    if not out:
        raise OptionError(f"invalid lcore list '{text}'")
    return sorted(set(out))


def parse_coremask(text: str) -> list[int]:
    try:
        mask = int(text, 16)
    except ValueError:
        raise OptionError(f"invalid coremask '{text}'") from None
    cores = [i for i in range(mask.bit_length()) if mask >> i & 1]
    if not cores:
        raise OptionError(f"coremask '{text}' selects no lcore")
    return cores


def parse_eal(args: list[str]) -> EalOptions:
    """Read the EAL part of a command line. DPDK options that mean nothing here are accepted and
    ignored; an option DPDK does not know either, or a stray word, is an :class:`OptionError`."""
    eal = EalOptions()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            i += 1
            if name not in EAL_OPTIONS:
                raise OptionError(f"unknown EAL option '{name}'")
        elif arg in EAL_WITH_VALUE:
            if i + 1 >= len(args):
                raise OptionError(f"EAL option {arg} needs a value")
            name, value = arg, args[i + 1]
            i += 2
        elif arg in EAL_FLAGS:
            i += 1
            continue
        elif not arg.startswith("--") and arg[:2] in EAL_WITH_VALUE:
            name, value = arg[:2], arg[2:]  # getopt's attached form, -l0-3
            i += 1
        elif arg.startswith("-"):
            raise OptionError(f"unknown EAL option '{arg}'")
        else:
            raise OptionError(f"unexpected EAL argument '{arg}' (application options go after '--')")
        if name == "-l" or name == "--lcores":
            eal.lcores = parse_lcore_list(value)
        elif name == "-c":
            eal.lcores = parse_coremask(value)
        elif name in ("--master-lcore", "--main-lcore"):
            try:
                eal.main_lcore = int(value)
            except ValueError:
                raise OptionError(f"invalid {name} '{value}'") from None
        elif name == "--file-prefix":
            eal.file_prefix = value
            try:
                check_file_prefix(value)
            except ValueError as e:
                raise OptionError(f"--file-prefix: {e}") from None
        elif name == "--vdev":
            eal.vdevs.append(value)
        elif name == "--proc-type":
            eal.proc_type = value
    if eal.main_lcore is not None:
        if eal.main_lcore not in eal.lcores:
            raise OptionError(f"main lcore {eal.main_lcore} is not among the lcores {eal.lcores}")
        eal.lcores = [eal.main_lcore] + [c for c in eal.lcores if c != eal.main_lcore]
    return eal


def parse_server(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT`` (``-s``) -> (host, port)."""
    host, _, port = text.rpartition(":")
    if not host:
        host, port = text, str(default_port)
    try:
        p = int(port)
    except ValueError:
        raise OptionError(f"invalid server address '{text}': expected HOST:PORT") from None
    if not 0 < p < 65536:
        raise OptionError(f"invalid server port in '{text}'")
    return host, p


#: ``--vdev`` names of virtio devices, as DPDK spells them: name prefix -> (port type, path key)
_VIRTIO_VDEVS = {
    "eth_vhost": ("vhost", "iface"),
    "net_vhost": ("vhost", "iface"),
    "net_virtio_user": ("virtio_user", "path"),
    "virtio_user": ("virtio_user", "path"),
}


#: queue sizes ``net_virtio_userN,queue_size=`` accepts
QUEUE_SIZES = frozenset(1 << k for k in range(6, 13))


def is_virtio_vdev(name: str) -> bool:
    return any(name.startswith(prefix) and name[len(prefix) :].isdigit() for prefix in _VIRTIO_VDEVS)


def port_options(vdevs: list[str], vhost_dir: str | None = None) -> dict[str, str]:
    """Per-port settings for the drivers: the vhost-user socket directory (``--vhost-dir``), and
    sockets named by ``--vdev eth_vhostN,iface=PATH[,client=1]`` or
    ``--vdev net_virtio_userN,path=PATH[,server=1][,queue_size=N][,zero_copy=1]`` (used when ``vhost:N`` /
    ``virtio_user:N`` is added, as SPP's primary hides vhost vdevs until a process adds them)."""
    opts: dict[str, str] = {}
    if vhost_dir is not None:
        if not os.path.isdir(vhost_dir):
            raise OptionError(f"--vhost-dir {vhost_dir}: no such directory")
        opts["vhost-dir"] = vhost_dir
    for vdev in vdevs:
        name, params = parse_vdev(vdev)
        for prefix, (ptype, key) in _VIRTIO_VDEVS.items():
            num = name[len(prefix) :]
            if name.startswith(prefix) and num.isdigit():
                if not params.get(key):
                    raise OptionError(f"--vdev {vdev}: needs {key}=PATH")
                opts[f"{ptype}:{int(num)}"] = params[key]
                mode = "client" if ptype == "vhost" else "server"
                if params.get(mode, "0") not in ("0", "1"):
                    raise OptionError(f"--vdev {vdev}: {mode} must be 0 or 1")
                if params.get(mode) == "1":
                    opts[f"{ptype}:{int(num)}:{mode}"] = "1"
                size = params.get("queue_size")
                if ptype == "virtio_user" and size is not None:
                    if not size.isdigit() or int(size) not in QUEUE_SIZES:
                        raise OptionError(f"--vdev {vdev}: queue_size must be a power of two from 64 to 4096")
                    opts[f"virtio_user:{int(num)}:queue_size"] = str(int(size))
                zero_copy = params.get("zero_copy")
                if ptype == "virtio_user" and zero_copy is not None:
                    if zero_copy not in ("0", "1"):
                        raise OptionError(f"--vdev {vdev}: zero_copy must be 0 or 1")
                    opts[f"virtio_user:{int(num)}:zero_copy"] = zero_copy
    return opts


def parse_vdev(text: str) -> tuple[str, dict[str, str]]:
    """``net_af_packet0,iface=veth0`` -> ("net_af_packet0", {"iface": "veth0"})."""
    name, *kvs = text.split(",")
    params: dict[str, str] = {}
    for kv in kvs:
        k, sep, v = kv.partition("=")
        if not sep:
            raise OptionError(f"invalid --vdev '{text}': '{kv}' is not key=value")
        params[k.strip()] = v.strip()
    return name.strip(), params
