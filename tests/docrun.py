"""Run every fenced code block of a Markdown document, as a reader would, and report each result.

``python -m tests.docrun DOC.md`` is meant to run inside fresh network, mount and PID namespaces
(``tests/test_docs.py`` starts it with ``unshare``), so the documents' own commands can use SPP's
default ports (7777, 5555, 6666), ``/dev/shm`` and ``/tmp`` without meeting anything else on the
machine, and every process they start ends with the runner.

Fence languages (every fence must have one):

* ``sh`` -- commands, one per (``\\``-continued) line, each must succeed. spp-ctl and the SPP
  processes run in the background, as in a terminal of their own; the runner waits until
  spp-ctl answers or the process has registered.
* ``console`` -- ``$ command`` lines, each followed by the output it must print.
* ``spp`` -- a CLI session: ``spp > command`` lines (a trailing ``# comment`` is not typed),
  each followed by the output it must print; no output shown means it must succeed silently or
  not, but without an error. One CLI session per document, so state carries across blocks.
* ``text`` -- not run: diagrams, output samples, file contents.

In expected output, a line ``...`` stands for any number of lines. A block can be left out
explicitly with ``<!-- doc-test: skip REASON -->`` on the line before its fence.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

RUN_LANGS = ("sh", "console", "spp")
NOT_RUN_LANGS = ("text",)
DAEMONS = ("spp-ctl", "spp-primary", "spp-nfv", "spp-vf", "spp-mirror", "spp-pcap")
#: spp-agent runs in the foreground as the agent (no sub-command) and as ``spp-agent etcd``; its
#: other sub-commands are tools. Each daemon form is up once its log says so.
AGENT_READY = {"etcd": "etcd listening on", None: "data plane built"}
SKIP_MARK = re.compile(r"<!--\s*doc-test:\s*skip\s+(?P<reason>.+?)\s*-->")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
PROMPT = "spp > "
COMMAND_TIMEOUT = 120.0
REGISTER_TIMEOUT = 20.0


@dataclass
class Block:
    doc: str
    line: int  # of the opening fence, 1-based
    lang: str
    body: list[str]
    skip_reason: str | None = None


@dataclass
class Result:
    doc: str
    line: int
    lang: str
    status: str  # "ok", "skipped", "not-run", "failed"
    detail: str = ""
    commands: list[str] = field(default_factory=list)


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path`` in order; an unterminated fence is an error."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent = len(m["indent"])
        start, body = i, []
        i += 1
        while i < len(lines) and not re.match(rf"^ {{{indent}}}```\s*$", lines[i]):
            body.append(lines[i][indent:])
            i += 1
        if i == len(lines):
            raise ValueError(f"{path}:{start + 1}: fence never closed")
        prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP_MARK.search(prev)
        blocks.append(Block(str(path), start + 1, m["lang"], body, skip["reason"] if skip else None))
        i += 1
    return blocks


def logical_lines(body: list[str]) -> list[str]:
    """Join ``\\``-continued lines; drop blank lines and whole-line comments."""
    out: list[str] = []
    pending = ""
    for raw in body:
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def matches(expected: list[str], actual: list[str]) -> bool:
    """``expected`` equals ``actual`` line by line, a ``...`` line standing for any lines."""
    pattern = "".join(
        r"(?:.*\n)*?" if e.strip() == "..." else re.escape(e.rstrip()) + r"\n" for e in expected
    )
    text = "".join(a.rstrip() + "\n" for a in actual)
    return re.fullmatch(pattern, text) is not None


class DocRunner:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env = dict(os.environ)
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        # `spp up` keeps its bed under the runtime dir: this run's own, not the machine's /run.
        self.env["XDG_RUNTIME_DIR"] = str(workdir)
        # The documents name the example beds as the README does, relative to the clone.
        (workdir / "examples").symlink_to(Path(__file__).resolve().parents[1] / "examples")
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.shell = None  # the CLI session, created at the first spp block

    # -- sh / console --------------------------------------------------------------------------

    def _api_port(self, argv: list[str]) -> int:
        for opt in ("-a", "--api-port"):
            if opt in argv[:-1]:
                return int(argv[argv.index(opt) + 1])
        return 7777

    def _processes(self, port: int = 7777) -> list[dict[str, object]] | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v1/processes", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return None

    @staticmethod
    def agent_daemon(argv: list[str]) -> str | None:
        """The line the log of a long-running ``spp-agent`` shows when ready; None for a tool."""
        if argv[0] != "spp-agent":
            return None
        sub, args = None, iter(argv[1:])
        for arg in args:
            if arg in ("--etcd", "--host", "--api", "--config-file"):
                next(args, None)  # the option's value
            elif not arg.startswith("-"):
                sub = arg
                break
        return AGENT_READY.get(sub)

    def start_daemon(self, line: str) -> str:
        argv = shlex.split(line, comments=True)
        log = self.workdir / f"{argv[0]}-{len(self.daemons)}.log"
        before = self._processes() or []
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.daemons.append(proc)
        deadline = time.monotonic() + REGISTER_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"`{line}` exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            ready = self.agent_daemon(argv)
            if ready is not None:
                if ready in log.read_text(errors="replace"):
                    return ""
            elif argv[0] == "spp-ctl":
                if self._processes(self._api_port(argv)) is not None:
                    return ""
            elif len(self._processes() or []) > len(before):
                return ""
            time.sleep(0.1)
        raise AssertionError(
            f"`{line}` did not come up within {REGISTER_TIMEOUT:g} s:\n{log.read_text()[-2000:]}"
        )

    def run_command(self, line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", line],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )

    def run_sh(self, block: Block, result: Result) -> None:
        for line in logical_lines(block.body):
            result.commands.append(line)
            argv = shlex.split(line, comments=True)
            if argv[0] in DAEMONS or self.agent_daemon(argv) is not None:
                self.start_daemon(line)
                continue
            r = self.run_command(line)
            if r.returncode != 0:
                raise AssertionError(f"`{line}` exited with {r.returncode}:\n{r.stdout}{r.stderr}")

    def run_console(self, block: Block, result: Result) -> None:
        for cmd, expected in split_session(block.body, "$ "):
            result.commands.append(cmd)
            r = self.run_command(cmd)
            actual = (r.stdout + r.stderr).splitlines()
            if expected and not matches(expected, actual):
                raise AssertionError(f"`{cmd}` printed:\n" + "\n".join(actual))
            if not expected and r.returncode != 0:
                raise AssertionError(f"`{cmd}` exited with {r.returncode}:\n" + "\n".join(actual))

    # -- spp -----------------------------------------------------------------------------------

    def cli(self):  # type: ignore[no-untyped-def]
        if self.shell is None:
            from spp.control.cli.client import SppCtlClient
            from spp.control.cli.session import Session
            from spp.control.cli.shell import Shell

            os.chdir(self.workdir)
            self.shell = Shell(Session([SppCtlClient("127.0.0.1", 7777, timeout=30)]))
        return self.shell

    def run_spp(self, block: Block, result: Result) -> None:
        shell = self.cli()
        for typed, expected in split_session(block.body, PROMPT):
            cmd = re.sub(r"\s+#.*$", "", typed)
            result.commands.append(cmd)
            before = shell.failures
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                shell.run_line(cmd)
                while shell.cmdqueue:  # what `playback` queued, as the shell's loop would run it
                    shell.run_line(shell.cmdqueue.pop(0))
            actual = (out.getvalue() + err.getvalue()).splitlines()
            if expected:
                if not matches(expected, actual):
                    raise AssertionError(f"`{cmd}` printed:\n" + "\n".join(actual))
            elif shell.failures > before:
                raise AssertionError(f"`{cmd}` failed:\n" + "\n".join(actual))

    # -- driver --------------------------------------------------------------------------------

    def run(self, blocks: list[Block]) -> list[Result]:
        results = []
        failed = False
        for b in blocks:
            res = Result(b.doc, b.line, b.lang, "ok")
            results.append(res)
            if b.lang not in RUN_LANGS + NOT_RUN_LANGS:
                res.status, res.detail = (
                    "failed",
                    f"fence language '{b.lang}' is not one of {RUN_LANGS + NOT_RUN_LANGS}",
                )
                continue
            if b.skip_reason is not None:
                res.status, res.detail = "skipped", b.skip_reason
                continue
            if b.lang in NOT_RUN_LANGS:
                res.status = "not-run"
                continue
            if failed:
                res.status, res.detail = "failed", "not run: an earlier block of this document failed"
                continue
            try:
                getattr(self, f"run_{b.lang}")(b, res)
            except Exception as e:
                res.status, res.detail = "failed", f"{type(e).__name__}: {e}"
                failed = True
        return results


def split_session(body: list[str], prompt: str) -> list[tuple[str, list[str]]]:
    """``[(command, expected output lines)]`` of a transcript whose commands start with ``prompt``."""
    steps: list[tuple[str, list[str]]] = []
    for raw in body:
        if raw.startswith(prompt):
            steps.append((raw[len(prompt) :].strip(), []))
        elif steps:
            steps[-1][1].append(raw)
        elif raw.strip():
            raise ValueError(f"output line before any '{prompt.strip()}' command: {raw!r}")
    return [(cmd, _trim(out)) for cmd, out in steps]


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _private_machine() -> None:
    """Inside fresh namespaces: loopback up, an empty /dev/shm and /tmp of our own."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for d in ("/dev/shm", "/tmp"):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)


def main(argv: list[str]) -> int:
    doc = Path(argv[0]).resolve()
    blocks = parse_blocks(doc)  # before /tmp is replaced: the document may live there
    _private_machine()
    workdir = Path(tempfile.mkdtemp(prefix="docrun-"))
    results = DocRunner(workdir).run(blocks)
    json.dump([asdict(r) for r in results], sys.__stdout__)
    sys.__stdout__.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
