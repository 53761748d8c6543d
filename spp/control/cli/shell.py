"""The SPP shell: a ``cmd.Cmd`` with SPP's commands, prompt, completion and history.

Every ``do_*`` method either prints SPP's output lines or raises :class:`CliError` /
:class:`CtlError`. :meth:`Shell.onecmd` turns those into one line on stderr and counts them, so
batch mode can exit non-zero and nothing ever shows a traceback.
"""

from __future__ import annotations

import cmd
import importlib
import logging
import pprint
import re
import shlex
import sys
import textwrap
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from . import top, topo
from .client import CtlError, SppCtlClient
from .commands import files, server
from .commands.nfv import Nfv
from .commands.primary import Primary
from .commands.workers import Mirror, Pcap, Vf
from .common import SEC_TYPES, CliError, clean_cmd, is_comment_line, split_sec_cmd
from .completion import COMPLETER_DELIMS, head_tokens, matching
from .help_msg import BANNER, HELP
from .history import History, readline
from .session import Session

__all__ = ["Shell"]

log = logging.getLogger("spp.cli")

PLUGIN_PACKAGE = "spp.control.cli.plugins"
PLUGIN_DIR = Path(__file__).parent / "plugins"

#: Commands that are not written to a recipe by ``record``.
NOT_RECORDED = ("playback", "bye", "exit", "EOF", "record", "history", "redo")

_SEC_CLASSES: dict[str, Callable[..., Any]] = {"nfv": Nfv, "vf": Vf, "mirror": Mirror, "pcap": Pcap}


def _safe(func: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """Completers run inside readline: a failure must give no candidates, never an exception."""

    def wrapper(self: Shell, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        try:
            return func(self, text, line, begidx, endidx)
        except Exception:
            log.debug("completion failed", exc_info=True)
            return []

    wrapper.__doc__ = func.__doc__
    return wrapper


class Shell(cmd.Cmd):
    """SPP's command prompt (``spp > ``)."""

    doc_header = "Documented commands (type help <topic>):"

    def __init__(
        self,
        session: Session,
        *,
        interactive: bool = False,
        history_file: str | None = None,
        echo: bool = False,
        debug: bool = False,
        err: IO[str] | None = None,
    ) -> None:
        super().__init__()
        self.session = session
        self.interactive = interactive
        self.echo = echo
        self.debug = debug
        self.err = err
        self.prompt = str(session.config["prompt"])
        self.intro = BANNER if interactive else None
        self.failures = 0
        self.history = History(history_file if interactive else None, use_readline=interactive)
        self.recorded_file: IO[str] | None = None
        self.subgraphs: dict[str, str] = {}
        self.primary = Primary(session)

    # -- plumbing ------------------------------------------------------------------------------

    def fail(self, message: str) -> None:
        """Report one failed command (one line, stderr) and remember it for the exit status."""
        self.failures += 1
        sys.stdout.flush()
        print(message, file=self.err or sys.stderr, flush=True)

    def onecmd(self, line: str) -> bool:
        if is_comment_line(line):
            print(line.strip())
            return False
        try:
            return bool(super().onecmd(line))
        except (CliError, CtlError) as e:
            self.fail(str(e))
        except KeyboardInterrupt:
            self.fail("Interrupted.")
        except BrokenPipeError:
            raise  # the reader of our output is gone: main() ends quietly
        except Exception as e:
            log.debug("internal error", exc_info=True)
            if self.debug:
                import traceback

                traceback.print_exc()
            self.fail(f"Error: internal error: {type(e).__name__}: {e}")
        return False

    def run_line(self, line: str, typed: bool = False) -> bool:
        """Run one line (as ``cmdloop`` would); True when the shell should stop."""
        if self.echo:
            print(f"{self.prompt}{line}")
        # Before running: `history` and `redo N` must not see their own line.
        self.history.record(line, typed)
        line = self.precmd(line)
        stop = self.onecmd(line)
        return bool(self.postcmd(stop, line))

    def run_lines(self, lines: Iterable[str], stop_on_error: bool = False) -> int:
        """Batch mode: run lines (and whatever ``playback`` queues); return the failure count."""
        try:
            for raw in lines:
                queue = [raw.rstrip("\r\n")]
                while queue or self.cmdqueue:
                    line = queue.pop(0) if queue else self.cmdqueue.pop(0)
                    if self.run_line(line) or (stop_on_error and self.failures):
                        return self.failures
        finally:
            self.close_record()
        return self.failures

    def interact(self) -> None:
        """Interactive loop with readline completion; Ctrl-C abandons the line, Ctrl-D quits."""
        self.history.load()
        old_completer = old_delims = None
        if readline is not None:
            old_completer, old_delims = readline.get_completer(), readline.get_completer_delims()
            readline.set_completer(self.complete)
            readline.set_completer_delims(COMPLETER_DELIMS)
            if "libedit" in (readline.__doc__ or ""):
                readline.parse_and_bind("bind ^I rl_complete")
            else:
                readline.parse_and_bind("tab: complete")
        if self.intro:
            print(self.intro)
        try:
            while True:
                if self.cmdqueue:
                    line, typed = self.cmdqueue.pop(0), False
                else:
                    try:
                        line, typed = input(self.prompt), True
                    except EOFError:
                        print()
                        line, typed = "EOF", False
                    except KeyboardInterrupt:
                        print("^C")
                        continue
                if self.run_line(line, typed):
                    break
        finally:
            self.close_record()
            if readline is not None:
                readline.set_completer(old_completer)
                readline.set_completer_delims(old_delims or "")

    def precmd(self, line: str) -> str:
        # SPP skipped any line merely *containing* playback/bye/exit, which lost `nfv 1; exit`;
        # here only those commands themselves (and record/history/redo) stay out of a recipe.
        words = line.split()
        if self.recorded_file and words and words[0] not in NOT_RECORDED:
            self.recorded_file.write(line + "\n")
            self.recorded_file.flush()
        return line

    def emptyline(self) -> bool:
        """An empty line does nothing (``cmd.Cmd`` would repeat the last command)."""
        return False

    def default(self, line: str) -> bool:
        word = line.split()[0] if line.split() else line
        raise CliError(f"Invalid command: '{word}'. Type 'help' to list commands.")

    def get_names(self) -> list[str]:
        # Plugins are bound on the instance, so look there as well as on the class.
        return sorted(
            set(dir(self.__class__)) | {k for k in vars(self) if k.startswith(("do_", "complete_"))}
        )

    def complete(self, text: str, state: int) -> str | None:
        """readline's completer; a single finished word gets a trailing space, as in bash."""
        if state == 0:
            super().complete(text, 0)
            m = self.completion_matches
            if len(m) == 1 and not m[0].endswith((":", "/", " ")):
                self.completion_matches = [m[0] + " "]
        try:
            return self.completion_matches[state]
        except IndexError:
            return None

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return [n[3:] for n in self.get_names() if n.startswith("do_" + text) and n != "do_EOF"]

    def close_record(self) -> None:
        if self.recorded_file:
            print("Closing file")
            self.recorded_file.close()
            self.recorded_file = None

    @property
    def client(self) -> SppCtlClient:
        return self.session.client

    # -- help ----------------------------------------------------------------------------------

    def do_help(self, arg: str) -> None:
        """List commands, or show help for one."""
        topic = arg.strip()
        if not topic:
            names = [n[3:] for n in self.get_names() if n.startswith("do_") and n != "do_EOF"]
            self.print_topics(self.doc_header, names, 15, 80)
            return
        if topic in HELP:
            print(HELP[topic])
            return
        func = getattr(self, "do_" + topic, None)
        if func is None:
            raise CliError(f"No help on '{topic}': no such command.")
        print(textwrap.dedent(func.__doc__ or "No help available.").strip())

    # -- status, server, config ----------------------------------------------------------------

    def do_status(self, arg: str) -> None:
        """Show spp-ctl's address and the running processes (status all: of every server)."""
        words = arg.split()
        if words == ["all"]:
            server.status_all(self.session)
            return
        if words:
            raise CliError("Usage: status [all]")
        state = server.ServerState(self.client.addr, self.client.processes())
        for line in server.status_lines(state):
            print(line)

    @_safe
    def complete_status(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return matching(["all"], text) if len(head_tokens(line, begidx)) == 1 else []

    def do_server(self, arg: str) -> None:
        """List, switch, add or delete spp-ctl servers."""
        server.run(self.session, arg)

    @_safe
    def complete_server(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return server.complete(self.session, text, head_tokens(line, begidx)[1:])

    def do_config(self, arg: str) -> None:
        """Show or change the CLI settings."""
        cfg = self.session.config
        parts = arg.strip().split(None, 1)
        if len(parts) <= 1:
            prefix = parts[0] if parts else ""
            items = list(cfg.items(prefix))
            if not items:
                raise CliError(f'No config key starts with "{prefix}".')
            for key, val, desc in items:
                print(f'- {key}: "{val}"\t# {desc}')
            return
        key, val = parts
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "\"'":
            val = val[1:-1]
        cfg.set(key, val)
        if key == "prompt":
            self.prompt = str(cfg["prompt"])
        print(f'Set {key}: "{val}"')

    @_safe
    def complete_config(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        if len(head_tokens(line, begidx)) == 1:
            return matching(self.session.config.keys(), text)
        return []

    # -- process commands ----------------------------------------------------------------------

    def do_pri(self, arg: str) -> None:
        """Send a command to spp_primary: pri; SUB"""
        line = clean_cmd(arg)
        if not line.startswith(";"):
            got = f"pri {line}".strip()
            raise CliError(f"Required ';' after 'pri', e.g. 'pri; status' (got '{got}').")
        self.primary.run(line[1:])

    @_safe
    def complete_pri(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self.primary.complete(text, line, begidx)

    def _sec(self, kind: str, arg: str) -> None:
        sid, sub = split_sec_cmd(kind, arg)
        if sid not in self.client.sec_ids(kind):
            raise CliError(f'"{kind} {sid}" does not exist.')
        _SEC_CLASSES[kind](self.client, sid).run(sub)

    def _complete_sec(self, kind: str, text: str, line: str, begidx: int) -> list[str]:
        head = line[:begidx]
        if ";" not in head:
            if len(head.split()) == 1:
                return matching([f"{i};" for i in self.client.sec_ids(kind, timeout=2.0)], text)
            return []
        sid = head.split(";", 1)[0].split()[-1]
        if not sid.isdigit():
            return []
        return _SEC_CLASSES[kind](self.client, int(sid)).complete(text, line, begidx)

    def do_nfv(self, arg: str) -> None:
        """Send a command to spp_nfv: nfv N; SUB"""
        self._sec("nfv", arg)

    @_safe
    def complete_nfv(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_sec("nfv", text, line, begidx)

    def do_vf(self, arg: str) -> None:
        """Send a command to spp_vf: vf N; SUB"""
        self._sec("vf", arg)

    @_safe
    def complete_vf(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_sec("vf", text, line, begidx)

    def do_mirror(self, arg: str) -> None:
        """Send a command to spp_mirror: mirror N; SUB"""
        self._sec("mirror", arg)

    @_safe
    def complete_mirror(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_sec("mirror", text, line, begidx)

    def do_pcap(self, arg: str) -> None:
        """Send a command to spp_pcap: pcap N; SUB"""
        self._sec("pcap", arg)

    @_safe
    def complete_pcap(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_sec("pcap", text, line, begidx)

    # -- rates ---------------------------------------------------------------------------------

    def do_top(self, arg: str) -> None:
        """Per-port packet rates of every process, refreshed until Ctrl-C: top [-i SECS] [-n COUNT|--once]"""
        try:
            argv = shlex.split(arg)
        except ValueError as e:
            raise CliError(f"top: {e}.") from e
        try:
            args = top.parse_args(top.build_parser("top"), argv)
        except top.HelpShown:
            return
        top.run(self.client, args.interval, args.count, plot=args.plot)

    @_safe
    def complete_top(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return matching(["--interval", "--count", "--once"], text) if text.startswith("-") else []

    # -- topology ------------------------------------------------------------------------------

    def do_topo(self, arg: str) -> None:
        """Show the network topology: topo term | topo dot | topo http | topo FILE[.svg|.mmd|.dot|...]"""
        topo.run_topo(self.client, self.session.config, self.subgraphs, arg)

    @_safe
    def complete_topo(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        if len(head_tokens(line, begidx)) != 1:
            return []
        if "." in text:
            stem = text.rsplit(".", 1)[0]
            exts = sorted(topo.IMAGE_TYPES | topo.TEXT_TYPES)
            return matching([f"{stem}.{e}" for e in exts], text)
        return matching(["term", "dot", "http"], text) or files.complete_path(text)

    def do_topo_subgraph(self, arg: str) -> None:
        """Add, delete or list subgraphs used by topo: topo_subgraph [add LABEL PORTS | del LABEL]"""
        args = arg.split()
        if not args:
            if not self.subgraphs:
                print("No subgraph.")
            for label, ports in self.subgraphs.items():
                print(f'label: {label}\tsubgraph: "{ports}"')
            return
        if args[0] == "add" and len(args) == 3:
            self.subgraphs[args[1]] = args[2].replace(",", ";").replace("_", ":")
            print(f"Add subgraph '{args[1]}'")
        elif args[0] == "del" and len(args) == 2:
            if args[1] not in self.subgraphs:
                raise CliError(f"No such subgraph '{args[1]}'.")
            del self.subgraphs[args[1]]
            print(f"Delete subgraph '{args[1]}'")
        else:
            raise CliError("Usage: topo_subgraph [add LABEL vhost:1,vhost:2 | del LABEL]")

    @_safe
    def complete_topo_subgraph(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = head_tokens(line, begidx)[1:]
        if not words:
            return matching(["add", "del"], text)
        if words == ["del"]:
            return matching(self.subgraphs, text)
        return []

    # -- VMs on vhost ports (spp/integrations/vm) ----------------------------------------------

    def do_vm(self, arg: str) -> None:
        """VMs with vhost-user NICs: vm start ID -d 1,2 | exec ID CMD | status ID | list | stop ID | image
        | ssh ID|NAME|ADDR [CMD] | ctl start|stop|restart|status [all|switch|vm|app] -f FILE

        The same commands as the spp-vm program ('vm -h' for options), e.g.
        vm start 1 -d 1,2 --ip 10.0.0.1/24 --ip 10.0.1.1/24
        """
        from spp.integrations.vm.cli import run_from_shell

        run_from_shell(arg)

    # -- plugins -------------------------------------------------------------------------------

    def do_load_cmd(self, arg: str) -> None:
        """Load a command plugin from spp/control/cli/plugins/: load_cmd NAME"""
        name = arg.strip()
        if not name:
            raise CliError("Usage: load_cmd NAME")
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise CliError(f"Invalid plugin name '{name}'.")
        modname = f"{PLUGIN_PACKAGE}.{name}"
        try:
            mod = importlib.import_module(modname)
            mod = importlib.reload(mod)  # pick up edits, as SPP does
        except ModuleNotFoundError as e:
            if e.name == modname:
                raise CliError(f"No plugin '{name}' in {PLUGIN_DIR}.") from e
            raise CliError(f"Error: cannot load plugin '{name}': {e}") from e
        except Exception as e:
            raise CliError(f"Error: cannot load plugin '{name}': {type(e).__name__}: {e}") from e
        func = getattr(mod, f"do_{name}", None)
        if not callable(func):
            raise CliError(f"Plugin '{name}' defines no do_{name}() function.")
        setattr(self, f"do_{name}", types.MethodType(func, self))
        for extra in (f"complete_{name}", f"help_{name}"):
            if callable(getattr(mod, extra, None)):
                setattr(self, extra, types.MethodType(getattr(mod, extra), self))
        print(f"Module '{name}' loaded.")

    @_safe
    def complete_load_cmd(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        names = [p.stem for p in PLUGIN_DIR.glob("*.py") if p.stem != "__init__"]
        return matching(sorted(names), text)

    # -- record / playback / history -----------------------------------------------------------

    def do_record(self, arg: str) -> None:
        """Record the following commands to a recipe file: record FILE"""
        fname = arg.strip()
        if not fname:
            raise CliError("Record file is required!")
        self.close_record()
        try:
            self.recorded_file = open(fname, "w", encoding="utf-8")  # noqa: SIM115 - stays open across commands
        except OSError as e:
            raise CliError(f"Cannot open '{fname}': {e.strerror}.") from e

    def do_playback(self, arg: str) -> None:
        """Run the commands of a recipe file: playback FILE"""
        fname = arg.strip()
        self.close_record()
        if not fname:
            raise CliError("Usage: playback FILE")
        try:
            with open(fname, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise CliError("Error: File does not exist.") from e
        queued = []
        for line in lines:
            if not line.strip() or is_comment_line(line):
                continue
            queued += [f"# {line.strip()}", line]
        self.cmdqueue[:0] = queued

    def do_history(self, arg: str) -> None:
        """Show the command history."""
        entries = self.history.entries()
        width = len(str(len(entries)))
        for i, line in enumerate(entries, 1):
            print(f"  {i:>{width}}  {line}")

    def do_redo(self, arg: str) -> bool:
        """Run the N-th command of the history again: redo N"""
        n = arg.strip()
        entries = self.history.entries()
        if not entries:
            raise CliError("The history is empty: there is nothing to redo.")
        if not n.isdigit() or not 1 <= int(n) <= len(entries):
            raise CliError(f"Usage: redo N, with N from 1 to {len(entries)} (see 'history').")
        line = entries[int(n) - 1]
        if line.split()[:1] == ["redo"]:
            raise CliError("Cannot redo a 'redo'.")
        return self.onecmd(line)

    # -- files ---------------------------------------------------------------------------------

    def do_pwd(self, arg: str) -> None:
        """Show the current directory."""
        files.pwd(arg)

    def do_cd(self, arg: str) -> None:
        """Change the current directory: cd [DIR]"""
        files.cd(arg)

    def do_ls(self, arg: str) -> None:
        """List files: ls [-l] [PATH...]"""
        files.ls(arg)

    def do_mkdir(self, arg: str) -> None:
        """Create directories: mkdir DIR..."""
        files.mkdir(arg)

    def do_cat(self, arg: str) -> None:
        """Show files: cat FILE..."""
        files.cat(arg)

    def do_less(self, arg: str) -> None:
        """Show a file (no pager): less FILE"""
        files.cat(arg)

    def do_env(self, arg: str) -> None:
        """Show environment variables: env [PREFIX]"""
        files.env(arg)

    @_safe
    def complete_cd(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return files.complete_path(text, dirs_only=True)

    @_safe
    def _complete_file(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return files.complete_path(text)

    complete_ls = complete_cat = complete_less = complete_mkdir = _complete_file
    complete_record = complete_playback = _complete_file

    # -- misc ----------------------------------------------------------------------------------

    def do_inspect(self, arg: str) -> None:
        """Show the shell's internal state (for debugging)."""
        state = {
            "servers": [s.addr for s in self.session.servers],
            "current_server": self.client.addr,
            "prompt": self.prompt,
            "interactive": self.interactive,
            "failures": self.failures,
            "recording": getattr(self.recorded_file, "name", None),
            "subgraphs": self.subgraphs,
            "cmdqueue": self.cmdqueue,
        }
        pprint.pprint(state)

    # -- leaving -------------------------------------------------------------------------------

    def _quit(self) -> bool:
        self.close_record()
        print("Thank you for using Soft Patch Panel")
        return True

    def do_bye(self, arg: str) -> bool:
        """Quit the CLI (bye), or exit all secondaries (bye sec) or everything (bye all)."""
        args = arg.split()
        if not args:
            return self._quit()
        if args not in (["sec"], ["all"]):
            raise CliError("Usage: bye [sec|all]")
        procs = self.client.processes()
        print("Closing secondary ...")
        for kind in SEC_TYPES:
            for p in procs:
                if p.get("type") == kind and isinstance(p.get("client-id"), int):
                    try:
                        _SEC_CLASSES[kind](self.client, p["client-id"]).exit()
                    except CtlError as e:
                        self.fail(str(e))
        if args == ["all"]:
            print("Closing primary ...")
            self.primary.exit()
        return False

    @_safe
    def complete_bye(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return matching(["sec", "all"], text) if len(head_tokens(line, begidx)) == 1 else []

    def do_exit(self, arg: str) -> bool:
        """Quit the CLI."""
        return self._quit()

    def do_EOF(self, arg: str) -> bool:
        """Ctrl-D quits like exit."""
        return self._quit()
