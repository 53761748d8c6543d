"""The command set shared by spp_vf and spp_mirror (spec §4.2, spp-api §4.5), and the process
class both are built on.

SPP's ``cmd_parser.c`` answers every refused command with one of a few fixed messages, and
scripts match them: ``Wrong message format`` (token count), ``Invalid value (command)``,
``Invalid value (<parameter>)`` and ``error occur`` (parsed, but could not be executed). Those
prefixes are kept, and a reason follows after a colon, so that spp-ctl's
``400 command error: ...`` tells the user what was wrong::

    Invalid value (port): ring:99 does not exist: the primary created ring:0..ring:3 (-n 4)
    Invalid value (port rxtx): ring:0 is already the rx port of component 'fwd1' (...)
    error occur: component 'fwd1' (forward) takes at most 1 tx port

Grammar (at most 8 tokens, split on spaces)::

    _get_client_id | status | exit
    component start NAME LCORE TYPE          TYPE: forward|merge|classifier (classifier_mac)
                                             for spp_vf, mirror for spp_mirror
    component stop NAME                      (up to two more tokens ignored, as the recipes use)
    port add PORT rx|tx NAME [add_vlantag VID [PCP] | del_vlantag]
    port del PORT rx|tx NAME
    classifier_table add|del mac MAC|default PORT          (spp_vf only)
    classifier_table add|del vlan VID MAC|default PORT

Replies are SPP's ``json_helper.c`` format (:mod:`spp.processes.worker_reply`), unpadded.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass
from typing import Any

from spp.engine.classifier import UNTAGGED, Entry, parse_mac
from spp.engine.components import RX_DIR, TX_DIR, ComponentManager, ConfigError
from spp.engine.portid import PortId, PortUidError, parse_port_uid
from spp.engine.shm import Segment
from spp.engine.vlan import ADD, DEL, PCP_MAX, VID_MAX, VlanOp
from spp.engine.worker import SPIN_SECONDS
from spp.processes.base import SppProcess, add_busy_poll_option, run_secondary
from spp.processes.worker_reply import client_id_reply, error, spaced_json, success

log = logging.getLogger(__name__)

MAX_TOKENS = 8
#: A component costs a dozen or more numpy calls per burst whatever the burst's size (spp_nfv's
#: patch, about four), so components take bigger bursts than nfv's 256 to amortise them; a ring
#: of the default 1024 slots still holds two.
WORKER_BURST = 512
NAME_MAX = 31  # SPP_NAME_STR_LEN is 32 with the NUL
PORT_TYPES = ("phy", "ring", "vhost")
_DIGITS = re.compile(r"^\d+$")


class CommandError(Exception):
    """A refused command; the message is the reply's ``error_details.message``."""


def wrong_format(reason: str) -> CommandError:
    return CommandError(f"Wrong message format: {reason}")


def invalid(param: str, reason: str) -> CommandError:
    return CommandError(f"Invalid value ({param}): {reason}")


def refused(e: ConfigError) -> CommandError:
    if e.param is None:
        return CommandError(f"error occur: {e.reason}")
    return invalid(e.param, e.reason)


# -- parsed commands ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Simple:
    """``_get_client_id``, ``status`` or ``exit``."""

    command: str


@dataclass(frozen=True)
class ComponentStart:
    name: str
    lcore: int
    kind: str


@dataclass(frozen=True)
class ComponentStop:
    name: str


@dataclass(frozen=True)
class PortCommand:
    action: str  # add | del
    uid: PortId
    direction: str
    name: str
    vlan: VlanOp | None = None  # None: no VLAN option given


@dataclass(frozen=True)
class TableCommand:
    action: str  # add | del
    entry: Entry
    uid: PortId


Command = Simple | ComponentStart | ComponentStop | PortCommand | TableCommand


def parse(tokens: list[str], kinds: dict[str, str], table: bool, process: str = "spp_vf") -> Command:
    """Check ``tokens`` against the grammar; raise :class:`CommandError` with SPP's message."""
    if not tokens:
        raise wrong_format("empty command")
    if len(tokens) > MAX_TOKENS:
        raise wrong_format(f"{len(tokens)} tokens (at most {MAX_TOKENS})")
    cmd = tokens[0]
    if cmd in ("_get_client_id", "status", "exit"):
        if len(tokens) != 1:
            raise wrong_format(f"'{cmd}' takes no parameters")
        return Simple(cmd)
    if cmd == "component":
        return _component(tokens, kinds, process)
    if cmd == "port":
        return _port(tokens)
    if cmd == "classifier_table" and table:
        return _table(tokens)
    if cmd == "classifier_table":
        raise invalid("command", f"{process} has no classifier table")
    if cmd in ("flush", "cancel"):
        raise invalid("command", f"'{cmd}' was removed from SPP: every command takes effect at once")
    known = "_get_client_id, status, exit, component, port" + (", classifier_table" if table else "")
    raise invalid("command", f"unknown command '{cmd}' (expected one of {known})")


def _component(tokens: list[str], kinds: dict[str, str], process: str) -> Command:
    usage = "component start NAME LCORE TYPE | component stop NAME"
    if len(tokens) < 3:
        raise wrong_format(usage)
    action = tokens[1]
    if action not in ("start", "stop"):
        raise invalid("action", f"'{action}' (expected start or stop)")
    name = _name(tokens[2])
    if action == "stop":
        return ComponentStop(name)  # SPP ignores anything after the name; recipes rely on it
    if len(tokens) != 5:
        raise wrong_format(usage)
    if not _DIGITS.match(tokens[3]):
        raise invalid("core", f"'{tokens[3]}' is not an lcore number")
    kind = kinds.get(tokens[4])
    if kind is None:
        names = "|".join(k for k in kinds if k != "classifier_mac")
        raise invalid("component type", f"'{tokens[4]}' is not a {process} component type ({names})")
    return ComponentStart(name, int(tokens[3]), kind)


def _port(tokens: list[str]) -> Command:
    usage = "port add|del PORT rx|tx NAME [add_vlantag VID PCP | del_vlantag]"
    if len(tokens) < 5:
        raise wrong_format(usage)
    action = tokens[1]
    if action not in ("add", "del"):
        raise invalid("action", f"'{action}' (expected add or del)")
    uid = _port_uid(tokens[2])
    direction = tokens[3]
    if direction not in (RX_DIR, TX_DIR):
        raise invalid("port rxtx", f"'{direction}' (expected rx or tx)")
    name = _name(tokens[4])
    if action == "del":
        if len(tokens) != 5:
            raise wrong_format("port del PORT rx|tx NAME")
        return PortCommand(action, uid, direction, name)
    if len(tokens) == 5:
        return PortCommand(action, uid, direction, name)
    op = tokens[5]
    if op == "del_vlantag":
        if len(tokens) != 6:
            raise wrong_format("del_vlantag takes no parameters")
        return PortCommand(action, uid, direction, name, VlanOp(DEL))
    if op != "add_vlantag":
        raise invalid("port vlan operation", f"'{op}' (expected add_vlantag or del_vlantag)")
    if len(tokens) < 7:
        raise wrong_format("add_vlantag VID [PCP]")
    vid = _number(tokens[6], VID_MAX, "port vid", "VLAN id")
    # SPP turned a missing PCP into -1, i.e. priority 7; no priority given means priority 0 here.
    pcp = _number(tokens[7], PCP_MAX, "port pcp", "priority") if len(tokens) == 8 else 0
    return PortCommand(action, uid, direction, name, VlanOp(ADD, vid, pcp))


def _table(tokens: list[str]) -> Command:
    usage = "classifier_table add|del mac MAC|default PORT | ... vlan VID MAC|default PORT"
    if len(tokens) not in (5, 6):
        raise wrong_format(usage)
    action = tokens[1]
    if action not in ("add", "del"):
        raise invalid("action", f"'{action}' (expected add or del)")
    kind = tokens[2]
    if kind not in ("mac", "vlan"):
        raise invalid("type", f"'{kind}' (expected mac or vlan)")
    if (kind == "mac") != (len(tokens) == 5):
        raise wrong_format(usage)
    vid = UNTAGGED if kind == "mac" else _number(tokens[3], VID_MAX, "vlan id", "VLAN id")
    mac_text = tokens[-2]
    mac: int | None = None
    if mac_text != "default":
        try:
            mac = parse_mac(mac_text)
        except ValueError as e:
            raise invalid("mac address", str(e)) from None
    return TableCommand(action, Entry(vid, mac), _port_uid(tokens[-1]))


def _name(text: str) -> str:
    if len(text) > NAME_MAX:
        raise invalid("component name", f"'{text}' is longer than {NAME_MAX} characters")
    return text


def _number(text: str, maximum: int, param: str, what: str) -> int:
    if not _DIGITS.match(text) or int(text) > maximum:
        raise invalid(param, f"'{text}' is not a {what} (0..{maximum})")
    return int(text)


def _port_uid(text: str) -> PortId:
    try:
        uid = parse_port_uid(text)
    except PortUidError as e:
        raise invalid("port", str(e)) from None
    if uid.type not in PORT_TYPES:
        raise invalid("port", f"{uid}: this process uses phy, ring and vhost ports only")
    return uid


# -- the process -------------------------------------------------------------------------------


class WorkerSecondary(SppProcess):
    """A secondary of SPP's "worker" family: components on worker lcores, driven by spp-ctl."""

    pad_replies = False  # spp_vf/spp_mirror send their JSON unpadded
    process_type = "vf"
    #: component type names accepted by ``component start`` -> the component kind
    kinds: dict[str, str] = {}
    has_table = False

    def __init__(
        self,
        seg: Segment,
        client_id: int,
        host: str,
        port: int,
        lcores: list[int],
        vhost_client: bool = False,
        burst: int = WORKER_BURST,
        options: dict[str, str] | None = None,
        spin: float = SPIN_SECONDS,
    ) -> None:
        self.name = f"spp_{self.process_type}:{client_id}"
        super().__init__(seg, host, port, client_id, self.process_type)
        if len(lcores) < 2:
            log.warning("%s: one lcore (%s): no worker lcore to run components on", self.name, lcores)
        self.manager = ComponentManager(
            seg,
            client_id,
            lcores,
            tuple(dict.fromkeys(self.kinds.values())),
            burst=burst,
            vhost_client=vhost_client,
            process_name=self.process_type,
            options=options,
            spin=spin,
        )

    def dispatch(self, command: str) -> str:
        tokens = command.split()
        try:
            parsed = parse(tokens, self.kinds, self.has_table, f"spp_{self.process_type}")
            reply = self.execute(parsed)
        except CommandError as e:
            log.warning("%s: '%s' refused: %s", self.name, command, e)
            return spaced_json(error(str(e)))
        if not isinstance(parsed, Simple):  # changes only: spp-ctl polls status
            log.info("%s: %s", self.name, command)
        return spaced_json(reply)

    def execute(self, cmd: Command) -> dict[str, Any]:
        m = self.manager
        try:
            match cmd:
                case Simple("_get_client_id"):
                    self.mark_registered()
                    return client_id_reply(self.client_id, self.process_type)
                case Simple("status"):
                    return success(info={"client-id": self.client_id, **m.status(self.has_table)})
                case Simple("exit"):
                    self.exiting = True
                    self.channel.closing.set()
                    return success()
                case ComponentStart(name, lcore, kind):
                    m.start_component(name, lcore, kind)
                case ComponentStop(name):
                    m.stop_component(name)
                case PortCommand("add", uid, direction, name, vlan):
                    m.attach(uid, direction, name, vlan)
                case PortCommand("del", uid, direction, name):
                    m.detach(uid, direction, name)
                case TableCommand("add", entry, uid):
                    m.add_entry(entry, uid)
                case TableCommand("del", entry, uid):
                    m.del_entry(entry, uid)
                case _:  # the parser never builds anything else
                    raise CommandError("Invalid value (command)")
        except ConfigError as e:
            raise refused(e) from None
        return success()

    def shutdown(self) -> None:
        self.manager.close()
        super().shutdown()


def build_parser(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,  # an option is spelt out or refused, never guessed
        prog=prog,
        description=description,
        usage=f"{prog} [EAL options] -- --client-id ID -s HOST:PORT [--vhost-client]",
    )
    p.add_argument("--client-id", dest="client_id", type=int, required=True, help="secondary id (1..127)")
    p.add_argument("-s", "--server", default="127.0.0.1:6666", help="spp-ctl address for secondaries")
    p.add_argument("--vhost-client", action="store_true", help="vhost-user ports connect as client")
    p.add_argument("--vhost-dir", help="directory of vhost:N sockets sockN (default /tmp)")
    p.add_argument(
        "--burst", type=int, default=WORKER_BURST, help="max packets per burst (default %(default)s)"
    )
    add_busy_poll_option(p, "each worker lcore")
    p.add_argument("--log-level", default="INFO")
    return p


def run_main(cls: type[WorkerSecondary], prog: str, argv: list[str] | None) -> int:
    """``main()`` of spp-vf and spp-mirror (:func:`~spp.processes.base.run_secondary`)."""
    summary = (sys.modules[cls.__module__].__doc__ or "").split("\n\n")[0]
    return run_secondary(cls, build_parser(prog, summary), argv)
