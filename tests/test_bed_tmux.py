"""``spp up --tmux`` at the level of one window: what a process prints from its first byte is
in its log, also when it fails at once (the diagnosis a failed start needs)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from spp.integrations.bed.procs import Supervised, Tmux
from spp.integrations.testbed import wait_for

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def test_a_process_that_fails_at_start_leaves_its_words_in_the_log(tmp_path: Path) -> None:
    tmux = Tmux(f"spp-test-{uuid.uuid4().hex[:8]}", tmp_path)
    tmux.create()
    try:
        for n in range(5):  # (it was lost only when the process wrote before the pipe existed)
            log = tmp_path / f"p{n}.log"
            proc = Supervised(f"p{n}", ["sh", "-c", f"echo failed-at-start-{n}; exit 3"], log, tmux=tmux)
            proc.start()
            wait_for(lambda proc=proc: not proc.alive(), 10, "the process to exit")
            wait_for(
                lambda log=log, n=n: log.exists() and f"failed-at-start-{n}" in log.read_text(),
                5,
                "its words in the log",
            )
    finally:
        tmux.destroy()
