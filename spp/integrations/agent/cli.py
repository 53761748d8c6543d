"""``spp-agent``: the agent (default) and the operator tools (sub-commands). Options come from
``--config-file`` files (neutron's INI: ``[DEFAULT] host``, ``[spp] etcd_host``, ``etcd_port``,
``api_ip_addr``, ``api_port``, and our ``etcd_endpoints``), overridden by flags."""

from __future__ import annotations

import argparse
import asyncio
import configparser
import contextlib
import faulthandler
import json
import logging
import signal
import socket
import sys
from typing import Any

import yaml

from spp.console import quiet_broken_pipe
from spp.integrations.agent import tools
from spp.integrations.agent.agent import CLAIM_GRACE, Agent
from spp.integrations.agent.etcd import Etcd, EtcdUnavailable, parse_endpoints
from spp.integrations.agent.localetcd import LocalEtcd, LocalEtcdError

log = logging.getLogger("spp.agent")


def _config_defaults(files: list[str]) -> dict[str, str]:
    cp = configparser.ConfigParser(interpolation=None)
    for path in files:
        try:
            with open(path) as f:
                cp.read_file(f)
        except (OSError, configparser.Error) as e:
            raise SystemExit(f"spp-agent: cannot read config file {path}: {e}") from None
    out: dict[str, str] = {}
    if cp.has_option("DEFAULT", "host"):
        out["host"] = cp.get("DEFAULT", "host")
    if cp.has_section("spp"):
        spp = cp["spp"]
        if spp.get("etcd_endpoints"):
            out["etcd"] = spp["etcd_endpoints"]
        elif spp.get("etcd_host"):
            out["etcd"] = f"{spp['etcd_host']}:{spp.get('etcd_port', '2379')}"
        if spp.get("api_ip_addr") or spp.get("api_port"):
            out["api"] = f"{spp.get('api_ip_addr', '127.0.0.1')}:{spp.get('api_port', '7777')}"
    return out


def _common(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    p.add_argument(
        "--config-file",
        action="append",
        default=d,
        metavar="FILE",
        help="INI file (neutron's ml2_conf.ini works); several may be given",
    )
    p.add_argument(
        "--etcd",
        default=d,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="etcd cluster members (default 127.0.0.1:2379)",
    )
    p.add_argument("--host", default=d, help="this compute host's name in etcd (default: short hostname)")
    p.add_argument("-v", "--verbose", action="store_true", default=d, help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spp-agent",
        description="networking-spp's agent: carries out etcd's plug/unplug and TaaS requests for this "
        "host on spp_vf and spp_mirror through spp-ctl. With a sub-command, an operator tool.",
        allow_abbrev=False,
    )
    _common(p, suppress=False)
    p.add_argument(
        "--api", default=None, metavar="HOST:PORT", help="spp-ctl's REST API (default 127.0.0.1:7777)"
    )
    p.add_argument(
        "--tap-claim-grace",
        type=float,
        default=CLAIM_GRACE,
        metavar="SECONDS",
        help="free a mirror claimed for a tap flow that has had no keys this long (default %(default)s: "
        "the TaaS driver writes a flow's keys right after claiming its mirrors)",
    )
    p.add_argument(
        "--local-etcd",
        action="store_true",
        help="start a private etcd on 127.0.0.1 (data in a temporary directory) and use it",
    )
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    cfg = sub.add_parser("config", help="write or remove a host's configuration (devstack's step)")
    csub = cfg.add_subparsers(dest="sub", required=True, metavar="build|destroy")
    b = csub.add_parser("build", help="configuration and vhost keys from DPDK_PORT_MAPPINGS")
    _common(b, suppress=True)
    b.add_argument("--mappings", required=True, metavar="PCI#PHYSNET#NUM_VHOST#CORE_MASK[,...]")
    b.add_argument("--mirror", metavar="NUM#CORE_MASK", help="spp_mirror components for TaaS (SPP_MIRROR)")
    b.add_argument("--force", action="store_true", help="even if ports are bound (their keys go stale)")
    b.add_argument("--component-conf", metavar="YAML", help="components per NIC (SPP_COMPONENT_CONF)")
    d = csub.add_parser("destroy", help="remove the host's configuration and every key of the host")
    _common(d, suppress=True)

    port = sub.add_parser("port", help="what the ML2 mechanism driver does: plug, unplug, status")
    psub = port.add_subparsers(dest="sub", required=True, metavar="plug|unplug|status")
    pl = psub.add_parser("plug", help="claim a vhost, bind, ask the agent, wait for up")
    _common(pl, suppress=True)
    pl.add_argument("--physnet", required=True)
    pl.add_argument("--mac", required=True)
    pl.add_argument("--port-id", help="Neutron port id (default: a new UUID)")
    pl.add_argument("--vlan", type=int, help="segmentation id of a VLAN network")
    pl.add_argument("--timeout", type=float, default=tools.PLUG_TIMEOUT)
    un = psub.add_parser("unplug", help="ask the agent to unplug (if the port was plugged)")
    _common(un, suppress=True)
    un.add_argument("--port-id", required=True)
    un.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="wait until it is done")
    st = psub.add_parser("status", help="ports of one host, or of all")
    _common(st, suppress=True)
    st.add_argument("--json", action="store_true")

    tap = sub.add_parser("tap", help="what the TaaS driver does: create, delete a tap flow")
    tsub = tap.add_subparsers(dest="sub", required=True, metavar="create|delete")
    tc = tsub.add_parser("create")
    _common(tc, suppress=True)
    tc.add_argument("--service-port", required=True)
    tc.add_argument("--source-port", required=True)
    tc.add_argument("--direction", required=True, choices=["IN", "OUT", "BOTH", "in", "out", "both"])
    tc.add_argument("--flow-id", help="tap flow id (default: a new UUID)")
    tc.add_argument("--timeout", type=float, default=tools.TAP_TIMEOUT)
    td = tsub.add_parser("delete")
    _common(td, suppress=True)
    td.add_argument("--flow-id", required=True)
    td.add_argument("--wait", type=float, default=0.0, metavar="SECONDS")

    sv = sub.add_parser("status", help="every host's ports and taps, from etcd")
    _common(sv, suppress=True)
    sv.add_argument("--json", action="store_true")

    le = sub.add_parser("etcd", help="run a private etcd on 127.0.0.1 until stopped (a quick try)")
    le.add_argument("--port", type=int, help="client port (default: a free one)")
    le.add_argument("--data-dir", help="keep the data here (default: a temporary directory, removed)")
    return p


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    conf = _config_defaults(getattr(args, "config_file", None) or [])
    args.etcd = getattr(args, "etcd", None) or conf.get("etcd") or "127.0.0.1:2379"
    args.host = getattr(args, "host", None) or conf.get("host") or socket.gethostname().split(".")[0]
    args.api = getattr(args, "api", None) or conf.get("api") or "127.0.0.1:7777"
    return args


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore", "grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _serve_until_signal(work: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await work(stop)


def _stop_on_sigterm_from_now() -> None:
    """From here on SIGTERM stops us as Ctrl-C does (KeyboardInterrupt), until the event loop
    installs its own handler: a SIGTERM during start-up would otherwise kill the process with
    the default action and leave its private etcd running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _started(local: LocalEtcd) -> bool:
    """Start a private etcd; when it cannot start, say why and clean up (the caller exits 1)."""
    try:
        local.start()
    except LocalEtcdError as e:
        local.close()
        print(f"spp-agent: {e}", file=sys.stderr)
        return False
    return True


def run_agent(args: argparse.Namespace) -> int:
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 prints every thread's stack to stderr
    _stop_on_sigterm_from_now()
    if not args.tap_claim_grace >= 0:  # (NaN too)
        print(
            f"spp-agent: --tap-claim-grace: {args.tap_claim_grace} is not a number of seconds",
            file=sys.stderr,
        )
        return 2
    local: LocalEtcd | None = None
    try:
        if args.local_etcd:
            local = LocalEtcd()
            if not _started(local):
                return 1
            args.etcd = local.endpoint
            print(
                f"spp-agent: started a local etcd at {local.endpoint} (data in {local.data_dir}); "
                "it stops with the agent",
                file=sys.stderr,
                flush=True,
            )
        agent = Agent(args.host, Etcd(parse_endpoints(args.etcd)), args.api, claim_grace=args.tap_claim_grace)
        log.info("spp-agent for host %s: etcd %s, spp-ctl %s", args.host, args.etcd, args.api)
        asyncio.run(_serve_until_signal(agent.run))
    except KeyboardInterrupt:
        pass  # stopped before (or while) the event loop took over the signals: a clean stop
    finally:
        if local is not None:
            local.close()
    return 0


def run_local_etcd(args: argparse.Namespace) -> int:
    _stop_on_sigterm_from_now()
    local = LocalEtcd(client_port=args.port, data_dir=args.data_dir)

    async def wait(stop: asyncio.Event) -> None:
        while not stop.is_set() and local.proc is not None and local.proc.poll() is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    code: int | None = 0
    try:
        if not _started(local):
            return 1
        print(
            f"etcd listening on {local.endpoint} (data in {local.data_dir}); Ctrl-C or SIGTERM stops it",
            flush=True,
        )
        asyncio.run(_serve_until_signal(wait))
    except KeyboardInterrupt:
        pass  # stopped before (or while) the event loop took over the signals: a clean stop
    finally:
        code = local.proc.poll() if local.proc else 0
        local.close()
    return 0 if code is None or code == 0 else 1


async def _tool(args: argparse.Namespace) -> int:
    etcd = Etcd(parse_endpoints(args.etcd))
    try:
        return await etcd.call_any(lambda e: _tool_body(e, args))
    finally:
        await etcd.close()


async def _tool_body(etcd: Etcd, args: argparse.Namespace) -> int:
    cmd = (args.cmd, getattr(args, "sub", None))
    if cmd == ("config", "build"):
        conf = None
        if args.component_conf:
            try:
                with open(args.component_conf) as f:
                    conf = yaml.safe_load(f)
            except (OSError, yaml.YAMLError) as e:
                raise tools.ToolError(f"cannot read {args.component_conf}: {e}") from None
            if not isinstance(conf, dict):
                raise tools.ToolError(f"{args.component_conf} is not a mapping")
        config = await tools.config_build(etcd, args.host, args.mappings, args.mirror, args.force, conf)
        print(json.dumps(config, indent=2))
    elif cmd == ("config", "destroy"):
        await tools.config_destroy(etcd, args.host)
        print(f"removed every key of host {args.host}")
    elif cmd == ("port", "plug"):
        r = await tools.plug(etcd, args.host, args.physnet, args.mac, args.port_id, args.vlan, args.timeout)
        print(json.dumps(r.vif(), indent=2))
        if not r.up:
            print(f"spp-agent: port {r.port_id} not up within {args.timeout:g} s", file=sys.stderr)
            return 1
    elif cmd == ("port", "unplug"):
        asked = await tools.unplug(etcd, args.host, args.port_id, args.wait)
        if not asked:
            print(
                f"spp-agent: port {args.port_id} is not plugged on {args.host}"
                + (" (or not unplugged in time)" if args.wait else ""),
                file=sys.stderr,
            )
            return 1
    elif cmd in (("port", "status"), ("status", None)):
        host = args.host if cmd[0] == "port" and args.host_given else None
        view = await tools.status(etcd, host)
        print(json.dumps(view, indent=2) if args.json else tools.format_status(view))
    elif cmd == ("tap", "create"):
        flow, up = await tools.tap_create(
            etcd, args.service_port, args.source_port, args.direction, args.flow_id, args.timeout
        )
        print(flow)
        if not up:
            print(f"spp-agent: tap flow {flow} not up within {args.timeout:g} s", file=sys.stderr)
            return 1
    elif cmd == ("tap", "delete"):
        host = args.host if args.host_given else None
        if not await tools.tap_delete(etcd, args.flow_id, host, args.wait):
            print(f"spp-agent: no tap flow {args.flow_id} to delete", file=sys.stderr)
            return 1
    return 0


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.host_given = getattr(args, "host", None) is not None
    _resolve(args)
    _setup_logging(bool(getattr(args, "verbose", False)))
    if args.cmd is None:
        try:
            return run_agent(args)
        except ValueError as e:
            print(f"spp-agent: {e}", file=sys.stderr)
            return 2
    if args.cmd == "etcd":
        return run_local_etcd(args)
    try:
        return asyncio.run(_tool(args))
    except tools.ToolError as e:
        print(f"spp-agent: {e}", file=sys.stderr)
        return 1
    except EtcdUnavailable as e:
        print(f"spp-agent: etcd unreachable: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"spp-agent: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
