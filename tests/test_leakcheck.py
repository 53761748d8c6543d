"""The session check of tests/leakcheck.py fails a run that leaves things behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LEAKY_TEST = """
import os, subprocess
from pathlib import Path
from tests.leakcheck import run_token

def test_leaks():
    Path(f"/tmp/spp-log-bed{run_token()}leak").mkdir()
    sleeper = subprocess.Popen(["sleep", "120"])
    Path(os.environ["LEAK_PIDS"]).write_text(f"{os.getpid()} {sleeper.pid}")
"""

TIDY_TEST = """
def test_tidy():
    assert True
"""


def run_suite(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp_path / "conftest.py").write_text(
        "from tests.leakcheck import pytest_sessionfinish, pytest_sessionstart\n"
    )
    (tmp_path / "test_x.py").write_text(body)
    pids = tmp_path / "pids"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEAK_PIDS": str(pids), "SPP_LEAK_GRACE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return r, pids


def test_a_run_that_leaves_a_directory_and_a_process_fails(tmp_path: Path) -> None:
    r, pids = run_suite(tmp_path, LEAKY_TEST)
    pytest_pid, sleeper = map(int, pids.read_text().split())
    try:
        out = r.stdout + r.stderr
        assert r.returncode == 1, out
        assert "1 passed" in out  # the test itself passed: the session check failed the run
        assert "the test run left these behind" in out
        assert f"directory /tmp/spp-log-bed{pytest_pid % 100000}xleak" in out
        assert f"process pid {sleeper}: sleep 120" in out
    finally:
        shutil.rmtree(f"/tmp/spp-log-bed{pytest_pid % 100000}xleak", ignore_errors=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(sleeper, signal.SIGKILL)


def test_a_tidy_run_passes(tmp_path: Path) -> None:
    r, _ = run_suite(tmp_path, TIDY_TEST)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left these behind" not in r.stdout
