"""The README's set-up commands: plain scripts that work as root, get root through sudo when run
by a user who has it, and say clearly what is wrong when neither is possible."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netutil import is_root

ROOT = Path(__file__).resolve().parents[1]
NEEDS_ROOT = pytest.mark.skipif(not is_root(), reason="switches to an unprivileged user (runuser)")


def readme_setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up and run", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's set-up section has a sh block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_setup_is_two_plain_commands_and_ci_runs_the_test_one() -> None:
    commands = readme_setup_commands()
    assert commands == ["./scripts/demo.sh", "./scripts/test.sh"]
    for command in commands:
        assert (ROOT / command).stat().st_mode & 0o111, f"{command} is executable"
    assert "scripts/test.sh" in (ROOT / ".ci/run").read_text()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory the unprivileged user can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="spp-scripts-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def path_with(tmp_path: Path, *, sudo: bool) -> str:
    """A PATH holding only what the scripts need before they switch to root, and maybe a sudo
    that records how it was called (running anything as root from an unprivileged user is
    what this machine must not allow a test to do)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "readlink", "dirname", "basename", "cat", "env"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    if sudo:
        log = tmp_path / "sudo.log"
        log.touch()
        log.chmod(0o666)  # the unprivileged user's fake sudo writes it
        (bin_dir / "sudo").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {log}\n')
        (bin_dir / "sudo").chmod(0o755)
    return str(bin_dir)


def as_nobody(script: str, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["runuser", "-u", "nobody", "--", "/usr/bin/env", "-i", f"PATH={path}"]
    return subprocess.run(
        [*argv, "bash", str(ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


@NEEDS_ROOT
@pytest.mark.parametrize("script", ["scripts/test.sh", "scripts/demo.sh"])
def test_a_user_with_sudo_gets_the_script_run_through_sudo(public_dir: Path, script: str) -> None:
    r = as_nobody(script, path_with(public_dir, sudo=True), "-k", "some test")
    assert r.returncode == 0, r.stderr
    assert "through sudo" in r.stderr
    argv = (public_dir / "sudo.log").read_text().splitlines()
    assert argv == ["--", str(ROOT / script), "-k", "some test"]  # the same script, same arguments


@NEEDS_ROOT
def test_tests_without_root_or_sudo_stop_with_a_clear_message(public_dir: Path) -> None:
    r = as_nobody("scripts/test.sh", path_with(public_dir, sudo=False))
    assert r.returncode == 1
    assert "test.sh: needs root" in r.stderr
    assert "sudo is not installed: run it as root" in r.stderr


@NEEDS_ROOT
def test_demo_without_root_or_sudo_goes_on_without_the_root_part(public_dir: Path) -> None:
    r = as_nobody("scripts/demo.sh", path_with(public_dir, sudo=False), "--help")
    assert "demo.sh: going on without root: no system packages installed, no namespaces" in r.stderr
